package tpmserver

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dpsagent/dpsagent/emulator/internal/atomicfile"
)

// seedFile holds the simulator's hierarchy seed, so that keys created by one
// run of `iotemu tpm --state DIR` load in the next (the storage root key is
// derived from the owner seed). Persistent handles and NV are not kept.
const seedFile = "tpm-seed"

// OpenSimulator starts the reference TPM simulator. With stateDir empty every
// start is a new TPM; otherwise its seed is read from (or created in) stateDir.
// Only one simulator can run per process.
func OpenSimulator(stateDir string) (transport.TPMCloser, error) {
	if stateDir == "" {
		sim, err := simulator.Get()
		if err != nil {
			return nil, fmt.Errorf("start TPM simulator: %w", err)
		}
		return transport.FromReadWriteCloser(sim), nil
	}
	seed, err := loadSeed(stateDir)
	if err != nil {
		return nil, err
	}
	sim, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		return nil, fmt.Errorf("start TPM simulator: %w", err)
	}
	return transport.FromReadWriteCloser(sim), nil
}

func loadSeed(dir string) (int64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("create TPM state directory: %w", err)
	}
	path := filepath.Join(dir, seedFile)
	data, err := os.ReadFile(path)
	if err == nil {
		seed, perr := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if perr != nil {
			return 0, fmt.Errorf("TPM state %s is damaged (%v): delete it to start with a new TPM (keys made with the old one will no longer load)", path, perr)
		}
		return seed, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("read TPM state: %w", err)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, err
	}
	seed := int64(binary.BigEndian.Uint64(b[:]) >> 1)
	if err := atomicfile.Write(path, []byte(strconv.FormatInt(seed, 10)+"\n")); err != nil {
		return 0, fmt.Errorf("write TPM state: %w", err)
	}
	return seed, nil
}
