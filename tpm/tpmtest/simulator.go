//go:build cgo

package tpmtest

import (
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
)

// Simulator starts the reference TPM simulator (manufactured afresh, so every
// call is a different TPM) and closes it in cleanup. The simulator is a single
// process-wide object: callers in one process run one at a time.
func Simulator(t testing.TB) transport.TPMCloser {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("start TPM simulator: %v", err)
	}
	return closeOnce(t, transport.FromReadWriteCloser(sim))
}

// SimulatorWithSeed starts the simulator with hierarchy seeds derived from seed,
// so two calls with one seed are the same TPM (as after a reboot).
func SimulatorWithSeed(t testing.TB, seed int64) transport.TPMCloser {
	t.Helper()
	sim, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		t.Fatalf("start TPM simulator: %v", err)
	}
	return closeOnce(t, transport.FromReadWriteCloser(sim))
}

// closeOnce lets a test close the simulator early (to reopen it) without the
// cleanup closing it a second time, which the simulator reports as an error.
func closeOnce(t testing.TB, tr transport.TPMCloser) transport.TPMCloser {
	c := &onceCloser{TPMCloser: tr}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

type onceCloser struct {
	transport.TPMCloser
	closed bool
}

func (c *onceCloser) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	return c.TPMCloser.Close()
}
