package store

import (
	"errors"
	"fmt"
)

// Sentinels to match with errors.Is. The typed errors below carry the details
// (the directory, the reason) and a hint of what to do.
var (
	// ErrLocked: another process holds the state directory (see LockedError).
	ErrLocked = errors.New("state directory is in use by another dpsagent")
	// ErrCorrupt: the manifest could not be used and was set aside (see CorruptError).
	ErrCorrupt = errors.New("state manifest is corrupt")
	// ErrNewerFormat: the manifest was written by a newer dpsagent (see FormatError).
	ErrNewerFormat = errors.New("state was written by a newer dpsagent")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("state store is closed")
	// ErrNoNext: PromoteNext was called with no identity staged.
	ErrNoNext = errors.New("no next identity is staged")
	// ErrNoCurrent: StageNext was called with no current identity to renew.
	ErrNoCurrent = errors.New("no current identity")
)

// LockedError is returned by Open when another process holds the directory's
// lock. Two writers would undo each other's commits, so the second one stops.
type LockedError struct {
	Dir string
	// PID is the holder's process ID as it wrote it into the lock file, 0 if unknown.
	PID int
}

func (e *LockedError) Error() string {
	holder := "another dpsagent"
	if e.PID > 0 {
		holder = fmt.Sprintf("another dpsagent (pid %d)", e.PID)
	}
	return fmt.Sprintf("state directory %s is in use by %s: the daemon, or `dpsagent provision` "+
		"while the daemon runs. While the daemon runs, use its commands (dpsagent status, dpsagent renew); "+
		"to work on the directory directly, stop it first (systemctl stop dpsagent)", e.Dir, holder)
}

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// FormatError is returned by Open when the manifest's format is newer than
// this build understands. Guessing at a newer format could destroy an identity
// the newer build would have used, so the directory is left untouched.
type FormatError struct {
	Dir       string
	Found     int // format_version in the manifest
	Supported int // the newest format this build reads (FormatVersion)
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("state in %s was written by a newer dpsagent (format %d, this build reads up to %d): "+
		"upgrade dpsagent or run `dpsagent reset`", e.Dir, e.Found, e.Supported)
}

func (e *FormatError) Is(target error) bool { return target == ErrNewerFormat }

// CorruptError describes a manifest that Open found unusable and set aside.
// Load returns it (with an empty manifest) until the next successful commit,
// so the agent provisions a new identity and can say why.
type CorruptError struct {
	Dir string
	// MovedTo is the path the manifest was renamed to.
	MovedTo string
	// Quarantine is the directory the other files were moved into, "" if there were none.
	Quarantine string
	// Reason is why the manifest could not be used.
	Reason error
}

func (e *CorruptError) Error() string {
	where := "moved to " + e.MovedTo
	if e.Quarantine != "" {
		where += ", the files beside it to " + e.Quarantine + "/"
	}
	return fmt.Sprintf("state in %s was unusable (%v); %s; dpsagent will provision a new identity "+
		"(nothing was deleted: to recover by hand, stop dpsagent and restore those files)", e.Dir, e.Reason, where)
}

func (e *CorruptError) Unwrap() error { return e.Reason }

func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// DirError is returned by Open when the state directory cannot be used as is:
// it is not a directory, others can read it, or it belongs to another user.
type DirError struct {
	Dir     string
	Problem string
	Hint    string
}

func (e *DirError) Error() string {
	return fmt.Sprintf("state directory %s %s: %s", e.Dir, e.Problem, e.Hint)
}
