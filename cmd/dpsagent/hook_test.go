package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent"
)

func TestRenewalHookGetsTheFactsAndNoSecrets(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "env.txt")
	script := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nenv | grep ^DPSAGENT_ > "+out+"\ncat \"$DPSAGENT_CHAIN_FILE\" >> "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	hook := renewalHook(script, dir, zap.NewNop())
	r := agent.Renewed{DeviceID: "gw-1", AssignedHub: "hub.example", Serial: "abc", Path: "hub",
		NotAfter: time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC), ChainPEM: []byte("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n")}
	if err := hook(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	for _, want := range []string{"DPSAGENT_DEVICE_ID=gw-1", "DPSAGENT_CERT_SERIAL=abc", "DPSAGENT_CERT_NOT_AFTER=2027-01-02T03:04:05Z", "DPSAGENT_RENEWAL_PATH=hub", "BEGIN CERTIFICATE"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("the hook's environment lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(string(got), "PRIVATE KEY") {
		t.Error("the hook saw a private key")
	}
	failing := filepath.Join(dir, "fail.sh")
	_ = os.WriteFile(failing, []byte("#!/bin/sh\necho broken; exit 3\n"), 0o755)
	if err := renewalHook(failing, dir, zap.NewNop())(context.Background(), r); err == nil {
		t.Error("a failing hook reported success")
	}
}
