//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// acquireLock takes an exclusive flock on dir/lock without waiting. flock
// belongs to the open file description, so the lock goes with the process
// (even on kill -9) and a second Open in the same process is refused too.
// The lock file is never removed: removing it would let two processes each
// lock a different file of the same name.
func acquireLock(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid := holderPID(f)
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{Dir: dir, PID: pid}
		}
		return nil, fmt.Errorf("lock state directory %s: %w", dir, err)
	}
	// Best effort, only for the next process's error message.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// holderPID reads the PID the lock's holder wrote, 0 if there is none.
func holderPID(f *os.File) int {
	b, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// checkOwner refuses a directory owned by another user. Typically root ran
// `dpsagent provision` against the daemon's directory: the files it would
// create (0600, owned by root) are ones the daemon cannot read.
func checkOwner(dir string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return &DirError{Dir: dir,
			Problem: fmt.Sprintf("belongs to uid %d, not to this process's uid %d", st.Uid, uid),
			Hint: "run dpsagent as the directory's owner (e.g. `sudo -u dpsagent dpsagent ...`), " +
				"or chown -R the directory to the user the daemon runs as"}
	}
	return nil
}
