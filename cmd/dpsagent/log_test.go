package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestLogFormats(t *testing.T) {
	for _, tc := range []struct {
		name, format string
		env          map[string]string
		check        func(string) bool
	}{
		{"journald", "text", map[string]string{"JOURNAL_STREAM": "8:1234"}, func(s string) bool {
			return strings.HasPrefix(s, "<4> renewal failed") && strings.Contains(s, "<6> hello")
		}},
		{"plain", "text", nil, func(s string) bool {
			return strings.HasPrefix(s, "WARN renewal failed") || strings.HasPrefix(s, "WARN\\trenewal failed") || strings.HasPrefix(s, "WARN\trenewal failed")
		}},
		{"json", "json", nil, func(s string) bool {
			var m map[string]any
			return json.Unmarshal([]byte(strings.SplitN(s, "\n", 2)[0]), &m) == nil && m["level"] == "warn" && m["ts"] != nil
		}},
	} {
		var buf bytes.Buffer
		c := &cli{stderr: &buf, logFormat: tc.format, getenv: func(k string) string { return tc.env[k] }}
		log := c.logger()
		log.Warn("renewal failed", zap.String("hint", "x"))
		log.Info("hello")
		if !tc.check(buf.String()) {
			t.Errorf("%s: %q", tc.name, buf.String())
		}
	}
}

// A canary onboarding key must never reach the logs, whatever happens:
// provisioning through the emulator with debug logging on.
func TestSecretsNeverReachTheLogs(t *testing.T) {
	cfgPath, _ := checkEnv(t)
	data, _ := os.ReadFile(cfgPath)
	keyFile := strings.TrimSuffix(strings.SplitN(strings.SplitN(string(data), "symmetric_key_file: ", 2)[1], "}", 2)[0], "")
	canary := "Q0FOQVJZLWNhbmFyeS1jYW5hcnktY2FuYXJ5LWNhbmFyeS0xMjM0NTY3OA=="
	if err := os.WriteFile(keyFile, []byte(canary+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// No enrollment exists for this device: the registration is refused, and
	// every error path logs what it has.
	code := run(ctx, []string{"provision", "-v", "-c", cfgPath, "--timeout", "20s"}, &out, &errOut)
	logs := out.String() + errOut.String()
	if code == exitOK {
		t.Fatalf("provisioning without an enrollment succeeded:\n%s", logs)
	}
	for _, secret := range []string{canary, "CANARY", "sig=", "SharedAccessSignature"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs contain %q:\n%s", secret, logs)
		}
	}
	if !strings.Contains(logs, "registering with DPS") {
		t.Errorf("the test did not reach registration:\n%s", logs)
	}
}
