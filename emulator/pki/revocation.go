package pki

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dpsagent/dpsagent/emulator/internal/atomicfile"
)

// Revocation follows Azure's model rather than CRLs: every device
// certificate carries its device's current generation, and revoking a
// device moves the generation on, so the hub refuses every certificate
// issued before. The device has to go back to DPS for a new one.
//
// The generation is carried in the subject's OU ("iotemu-generation-N")
// rather than a private extension: that needs no invented OID, and it shows
// in `openssl x509 -subject`, which tells whoever debugs a refused device
// why.
const generationPrefix = "iotemu-generation-"

// revocationsVersion is the format_version of the revocations file.
const revocationsVersion = 1

// revokedDevice is a device's entry in the revocations file. Devices never
// revoked have no entry and are at generation 0, so issuing writes nothing.
type revokedDevice struct {
	Generation uint64    `json:"generation"`
	RevokedAt  time.Time `json:"revoked_at"`
}

type revocationsFile struct {
	FormatVersion int                      `json:"format_version"`
	Devices       map[string]revokedDevice `json:"devices"`
}

func generationOU(gen uint64) string {
	return generationPrefix + strconv.FormatUint(gen, 10)
}

// certGeneration reads the generation from a certificate's subject. It
// must be there exactly once: a certificate without one was not issued
// here.
func certGeneration(ous []string) (uint64, error) {
	var (
		gen   uint64
		found bool
	)
	for _, ou := range ous {
		digits, ok := strings.CutPrefix(ou, generationPrefix)
		if !ok {
			continue
		}
		if found {
			return 0, errors.New("two revocation generations in the subject")
		}
		n, err := strconv.ParseUint(digits, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("revocation generation %q: %w", ou, err)
		}
		gen, found = n, true
	}
	if !found {
		return 0, errors.New("no revocation generation in the subject")
	}
	return gen, nil
}

// generation is deviceID's current generation.
func (ca *DeviceCA) generation(deviceID string) uint64 {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.generations[deviceID].Generation
}

// Revoke invalidates every certificate issued to deviceID so far; those
// issued afterwards are valid. The change is on disk before Revoke returns.
// Revoking a device that has no certificate is allowed and harmless.
func (ca *DeviceCA) Revoke(deviceID string) error {
	if deviceID == "" {
		return errors.New("revoke: no device ID")
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	old, had := ca.generations[deviceID]
	ca.generations[deviceID] = revokedDevice{
		Generation: old.Generation + 1,
		RevokedAt:  ca.now().UTC().Truncate(time.Second),
	}
	// Memory follows the file: if the write fails, the revocation did not
	// happen, and the caller is told so.
	if err := saveRevocations(ca.dir, ca.generations); err != nil {
		if had {
			ca.generations[deviceID] = old
		} else {
			delete(ca.generations, deviceID)
		}
		return fmt.Errorf("revoke %q: %w", deviceID, err)
	}
	return nil
}

func saveRevocations(dir string, devices map[string]revokedDevice) error {
	data, err := json.MarshalIndent(revocationsFile{FormatVersion: revocationsVersion, Devices: devices}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", deviceRevocationsFile, err)
	}
	return atomicfile.Write(filepath.Join(dir, deviceRevocationsFile), append(data, '\n'))
}

// loadRevocations reads the revocations file; no file means no revocations.
// A file that cannot be read is an error, not a fresh start: forgetting
// revocations would silently let revoked devices back in.
func loadRevocations(dir string) (map[string]revokedDevice, error) {
	path := filepath.Join(dir, deviceRevocationsFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]revokedDevice{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load revocations: %w", err)
	}
	var f revocationsFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("load revocations from %s: %w (fix or restore the file; deleting it un-revokes every device)", path, err)
	}
	if f.FormatVersion != revocationsVersion {
		return nil, fmt.Errorf("load revocations from %s: format_version %d, this iotemu reads %d", path, f.FormatVersion, revocationsVersion)
	}
	if f.Devices == nil {
		f.Devices = map[string]revokedDevice{}
	}
	return f.Devices, nil
}
