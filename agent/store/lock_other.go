//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package store

import (
	"fmt"
	"io/fs"
	"os"
	"runtime"
)

// The agent targets Linux; elsewhere the package builds (for tools and
// editors) but refuses to open a directory it cannot lock.
func acquireLock(dir string) (*os.File, error) {
	return nil, fmt.Errorf("lock state directory %s: not supported on %s (dpsagent runs on Linux)", dir, runtime.GOOS)
}

func checkOwner(string, fs.FileInfo) error { return nil }
