package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestStepsShowProgressAndOutcome(t *testing.T) {
	var buf bytes.Buffer
	core := newStepCore(&buf)
	log := zap.New(core)
	log.Debug("hidden detail")
	log.Info("creating a key for this device", zap.String("algorithm", "auto"))
	log.Info("registering with DPS")
	log.Warn("provisioning failed", zap.Error(errors.New("401: not accepted")))
	log.Info("connecting")
	core.finish(false)
	out := buf.String()
	for _, want := range []string{
		"✓ creating a key for this device\n",
		"✓ registering with DPS\n",
		"! provisioning failed\n    401: not accepted\n",
		"✗ connecting\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%q", want, out)
		}
	}
	if strings.Contains(out, "hidden detail") || strings.Contains(out, "algorithm") {
		t.Errorf("details leaked into the steps:\n%s", out)
	}
}
