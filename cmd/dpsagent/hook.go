package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent"
)

// renewalHook runs the administrator's command after a renewal. It gets no
// secrets: the facts and the public chain only, in its environment and in a
// file under the runtime directory. It runs inside the service's sandbox (see
// README: what a hook may touch, and how to widen that).
func renewalHook(path, runtimeDir string, log *zap.Logger) func(context.Context, agent.Renewed) error {
	return func(ctx context.Context, r agent.Renewed) error {
		chainFile := filepath.Join(runtimeDir, "renewed-chain.pem")
		if err := os.WriteFile(chainFile, r.ChainPEM, 0o644); err != nil {
			chainFile = ""
		}
		cmd := exec.CommandContext(ctx, path)
		cmd.Env = append(os.Environ(),
			"DPSAGENT_DEVICE_ID="+r.DeviceID,
			"DPSAGENT_ASSIGNED_HUB="+r.AssignedHub,
			"DPSAGENT_CERT_SERIAL="+r.Serial,
			"DPSAGENT_CERT_NOT_BEFORE="+r.NotBefore.Format(time.RFC3339),
			"DPSAGENT_CERT_NOT_AFTER="+r.NotAfter.Format(time.RFC3339),
			"DPSAGENT_KEY_ALGORITHM="+r.KeyAlgorithm,
			"DPSAGENT_KEY_STORAGE="+r.KeyStorage,
			"DPSAGENT_RENEWAL_PATH="+r.Path,
			"DPSAGENT_CHAIN_FILE="+chainFile,
		)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		log.Info("after-renewal hook ran", zap.String("hook", path), zap.String("output", strings.TrimSpace(truncate(out.String(), 2000))), zap.Error(err))
		if err != nil {
			return fmt.Errorf("hook %s: %w", path, err)
		}
		return nil
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
