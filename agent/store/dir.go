package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// prepareDir creates dir (0700) if it is missing and otherwise refuses it
// unless it is a directory that only its owner, this process's user, can
// reach: the key files in it may be the device's private key.
func prepareDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create state directory %s: %w (create its parent directory, or set advanced.state_dir)", dir, err)
		}
		// The umask may have cleared owner bits too; the mode must be exactly 0700.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("create state directory %s: %w", dir, err)
		}
		// Without this a power cut could lose the new directory with all that is written into it.
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return fmt.Errorf("create state directory %s: %w", dir, err)
		}
		fi, err = os.Stat(dir)
	}
	if err != nil {
		return fmt.Errorf("open state directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return &DirError{Dir: dir, Problem: "is not a directory",
			Hint: "move that file away, or set advanced.state_dir to a directory"}
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return &DirError{Dir: dir, Problem: fmt.Sprintf("has mode %04o, so other users can reach the device's keys", perm),
			Hint: fmt.Sprintf("run `chmod 700 %s` (and check nobody copied the keys)", dir)}
	}
	return checkOwner(dir, fi)
}
