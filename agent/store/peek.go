package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Peek reads the committed manifest in dir without taking the lock, without
// migrating, collecting garbage or setting anything aside: for `dpsagent
// status` and `dpsagent check`, which must work beside a running daemon and
// never change its state. A directory without a manifest gives an empty one.
// The manifest is replaced by rename, so a read never sees half of one.
func Peek(dir string) (*Manifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, manifestName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("read state directory: %w", serr)
		}
		return &Manifest{}, nil
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("read %s: permission denied: run as the service user (sudo -u dpsagent) or as root", filepath.Join(dir, manifestName))
	case err != nil:
		return nil, fmt.Errorf("read state: %w", err)
	}
	m, _, err := decodeManifest(data)
	if err != nil {
		var fe *FormatError
		if errors.As(err, &fe) {
			fe.Dir = dir
			return nil, fe
		}
		return nil, fmt.Errorf("the state in %s is unreadable (%w); the agent will set it aside and provision afresh at its next start", dir, err)
	}
	// The same rule as Open: a staged next identity that is unusable is
	// dropped and the current one kept, so show what the agent goes on with.
	use, _, err := settle(m, func(*Manifest) error { return nil })
	if err != nil {
		return nil, fmt.Errorf("the state in %s is inconsistent (%w); the agent will set it aside and provision afresh at its next start", dir, err)
	}
	return use, nil
}
