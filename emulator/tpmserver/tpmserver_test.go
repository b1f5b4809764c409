package tpmserver

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"go.uber.org/goleak"

	"github.com/dpsagent/dpsagent/tpm"
	"github.com/dpsagent/dpsagent/tpm/keys"
)

func serve(t *testing.T, stateDir string) (addr string, stop func()) {
	t.Helper()
	sim, err := OpenSimulator(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(sim, nil).Serve(ctx, l) }()
	return l.Addr().String(), func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		_ = sim.Close()
	}
}

// dpsagent's own TPM code works against the served simulator, and a key made in
// one run of a stateful simulator loads in the next.
func TestServedSimulatorKeepsKeysAcrossRestarts(t *testing.T) {
	defer goleak.VerifyNone(t)
	state := t.TempDir()
	addr, stop := serve(t, state)
	tp, err := tpm.Open("tcp:"+addr, tpm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := tp.CreateKey(keys.Auto)
	if err != nil {
		t.Fatal(err)
	}
	if k.Algorithm() != keys.ECDSAP384 {
		t.Errorf("auto on the simulator = %s, want ecdsa-p384", k.Algorithm())
	}
	blob := k.Blob()
	tp.Close()
	stop()

	addr, stop = serve(t, state)
	defer stop()
	tp, err = tpm.Open("tcp:"+addr, tpm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	k2, err := tp.LoadKey(blob)
	if err != nil {
		t.Fatalf("key from the previous run: %v", err)
	}
	d := sha256.Sum256([]byte("x"))
	sig, err := k2.Sign(nil, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Fatal("signature from the reloaded key does not verify")
	}
}

func TestOversizedCommandClosesConnection(t *testing.T) {
	defer goleak.VerifyNone(t)
	addr, stop := serve(t, "")
	defer stop()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var hdr [10]byte
	binary.BigEndian.PutUint16(hdr[0:2], 0x8001)
	binary.BigEndian.PutUint32(hdr[2:6], 1<<30)
	if _, err := c.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); err != io.EOF || n != 0 {
		t.Fatalf("after a 1 GiB announcement: read %d bytes, err %v; want the connection closed", n, err)
	}
}

func FuzzReadCommand(f *testing.F) {
	f.Add([]byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0})
	f.Add([]byte{0x80, 0x01, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := readCommand(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(cmd) < headerSize || len(cmd) > maxCommandSize || int(binary.BigEndian.Uint32(cmd[2:6])) != len(cmd) {
			t.Fatalf("accepted a command of %d bytes whose header says %d", len(cmd), binary.BigEndian.Uint32(cmd[2:6]))
		}
	})
}
