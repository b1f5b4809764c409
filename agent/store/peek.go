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
	// The daemon commits a new manifest before it removes the files the old
	// one named: when the files an old read names are gone, the manifest
	// has changed under us, and one more read sees the new one.
	m, err := peek(dir)
	var missing *missingFilesError
	if errors.As(err, &missing) {
		m, err = peek(dir)
	}
	return m, err
}

// missingFilesError: the manifest names files that are not there.
type missingFilesError struct{ error }

func peek(dir string) (*Manifest, error) {
	path := filepath.Join(dir, manifestName)
	data, err := readManifest(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("read state directory: %w", serr)
		}
		return &Manifest{}, nil
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("read %s: permission denied: run as the service user (sudo -u dpsagent) or as root", path)
	case errors.Is(err, errManifestTooLarge):
		return nil, fmt.Errorf("the state in %s is unreadable (%w); the agent will set it aside and provision afresh at its next start", dir, err)
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
	// The same rules as Open: the files must be there, and a staged next
	// identity that is unusable is dropped and the current one kept, so
	// show what the agent goes on with.
	use, _, err := settle(m, func(m *Manifest) error { return checkFiles(dir, m) })
	if err != nil {
		return nil, &missingFilesError{fmt.Errorf("the state in %s is inconsistent (%w); the agent will set it aside and provision afresh at its next start", dir, err)}
	}
	return use, nil
}
