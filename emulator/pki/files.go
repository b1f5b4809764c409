package pki

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dpsagent/dpsagent/emulator/internal/atomicfile"
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

// dirMode is the data directory's: it is the emulator's private state. Every
// file in it is written through atomicfile, mode 0600, certificates included:
// one mode for all keeps the rule simple.
const dirMode = 0o700

func writePEM(dir, name, blockType string, der []byte) error {
	return atomicfile.Write(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}))
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
