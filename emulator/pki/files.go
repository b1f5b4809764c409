package pki

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Names of the files in the data directory. The certificates are exported
// because operators hand them to devices as trust anchors.
const (
	// DeviceRootFile is the device root certificate (PEM): what a device or
	// a test trusts to check an issued chain.
	DeviceRootFile = "device-root.pem"
	// ServerCAFile is the TLS CA certificate (PEM): the trust bundle a
	// device needs to connect to the emulator's listeners.
	ServerCAFile = "tls-ca.pem"

	deviceRootKeyFile     = "device-root.key"
	deviceIssuingFile     = "device-issuing.pem"
	deviceIssuingKeyFile  = "device-issuing.key"
	deviceRevocationsFile = "device-revocations.json"
	serverCAKeyFile       = "tls-ca.key"
)

// fileMode is used for every file, certificates included: the directory is
// the emulator's private state, and one mode for all keeps the rule simple.
const (
	fileMode = 0o600
	dirMode  = 0o700
)

// writeFileAtomic replaces dir/name with data so that a crash leaves the old
// content or the new, never a torn file: a temporary file in the same
// directory is written and synced, renamed over the target, and the
// directory is synced so the rename itself survives a power cut.
func writeFileAtomic(dir, name string, data []byte) (err error) {
	tmp, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(fileMode); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

func writePEM(dir, name, blockType string, der []byte) error {
	return writeFileAtomic(dir, name, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}))
}

// readPEM returns the DER of the one blockType block in dir/name.
func readPEM(dir, name, blockType string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != blockType {
		return nil, fmt.Errorf("read %s: no %s PEM block", name, blockType)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, fmt.Errorf("read %s: more than one PEM block", name)
	}
	return block.Bytes, nil
}

func exists(dir, name string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, name))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}
