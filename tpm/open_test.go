package tpm

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/tpmtest"
)

func TestOpenErrorsSayWhatToDo(t *testing.T) {
	// A port nobody listens on: take one and close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().String()
	l.Close()
	notDevice := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDevice, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ spec, want string }{
		{"tcp:" + closedPort, "iotemu tpm"},
		{"unix:" + filepath.Join(t.TempDir(), "nope.sock"), "--server type=unixio"},
		{"/dev/does-not-exist-tpm", "enabled in the firmware"},
		{"swtpm", "use a device path"},
		{notDevice, "open TPM " + notDevice},
	} {
		_, err := Open(tc.spec, Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) error = %v, want it to mention %q", tc.spec, err, tc.want)
		}
	}
}

// swtpm started without TPM2_Startup, as after a cold boot: Open must start it.
func TestOpenStartsAnUninitialisedTPM(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	tp, err := Open(sw.Spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	info, err := tp.Info()
	if err != nil {
		t.Fatalf("first command on an unstarted TPM: %v", err)
	}
	if info.Manufacturer == "" || len(info.KeyAlgorithms) == 0 || info.TransientSlots < 3 {
		t.Errorf("info looks empty: %+v", info)
	}
	if _, err := tp.CreateKey(keys.ECDSAP256); err != nil {
		t.Fatal(err)
	}
}

func TestOpenUnixSocket(t *testing.T) {
	sw := tpmtest.StartSwtpmUnix(t)
	tp, err := Open(sw.Spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	k, err := tp.CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	keysCSR(t, k)
}
