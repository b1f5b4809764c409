//go:build !cgo

package tpmtest

import (
	"testing"

	"github.com/google/go-tpm/tpm2/transport"
)

// The reference simulator is C: without cgo (cross-compiled test binaries run
// under qemu) the tests that use it skip, and the swtpm tests still run.
const noSimulator = "the TPM simulator needs cgo, and this test binary was built with CGO_ENABLED=0 (the swtpm tests still run)"

// Simulator skips the test: see noSimulator.
func Simulator(t testing.TB) transport.TPMCloser {
	t.Helper()
	t.Skip(noSimulator)
	return nil
}

// SimulatorWithSeed skips the test: see noSimulator.
func SimulatorWithSeed(t testing.TB, _ int64) transport.TPMCloser {
	t.Helper()
	t.Skip(noSimulator)
	return nil
}
