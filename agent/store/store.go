package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// DefaultDir is where the daemon keeps its state unless configured otherwise.
const DefaultDir = "/var/lib/dpsagent"

// Options are the collaborators of a Store. The zero value is ready to use.
type Options struct {
	// Logger receives what the store decides on its own (garbage removed,
	// manifests set aside, migrations). It never receives file contents.
	// nil: zap.NewNop().
	Logger *zap.Logger

	// Now names set-aside files. nil: time.Now.
	Now func() time.Time

	// Hook, when set, is called before every fsync, rename, removal and
	// directory fsync, with the step's name (NAME is the final file name):
	//
	//	write:NAME:fsync         fsync the temporary file that will become NAME
	//	rename:NAME              rename it to NAME (rename:state.json is the commit point)
	//	dirsync:NAME             fsync the directory after that rename
	//	remove:NAME              remove a file no manifest names any more
	//	move:NAME                move NAME aside (a corrupt manifest and its neighbours)
	//	dirsync:quarantine-<ts>  fsync the quarantine directory
	//	dirsync:move             fsync the directory after moving files aside
	//
	// A non-nil return stops the operation right there, leaving the directory
	// as a crash at that point would (no clean-up), and makes the Store
	// unusable. Crash tests return a sentinel error, or call os.Exit in a
	// child process. nil: no hook.
	Hook func(step string) error

	// SetAsideNewerFormat makes Open move a manifest of a newer format aside
	// (as state.json.newer-<ts>, the other files quarantined) instead of
	// refusing it. Only for `dpsagent reset`, which the refusal recommends.
	SetAsideNewerFormat bool
}

// OpenReport says what Open found and what it did about it, for the log and
// the status screen.
type OpenReport struct {
	// Fresh: there was no manifest, so this is a first start (or the manifest
	// was removed by hand). Load returns an empty manifest and no error.
	Fresh bool
	// Migrated: the manifest was in an older format, MigratedFrom, and has
	// been rewritten in FormatVersion.
	Migrated     bool
	MigratedFrom int
	// Removed lists the files no manifest named, left by an interrupted run,
	// that Open deleted.
	Removed []string
	// DroppedNext says why a staged next identity was unusable and dropped
	// (the current one was kept); nil if nothing was dropped.
	DroppedNext error
	// Corrupt is set when the manifest was unusable and set aside.
	Corrupt *CorruptError
}

// Store is an open state directory. It holds the directory's lock until
// Close. Its methods are safe for concurrent use.
type Store struct {
	dir  string
	opts Options
	log  *zap.Logger
	now  func() time.Time

	mu      sync.Mutex
	lock    *os.File      // nil once closed
	m       *Manifest     // the committed manifest; never handed out, only clones
	corrupt *CorruptError // what Open set aside, until the next commit
	report  OpenReport
	broken  error // set when memory and disk may disagree; every later call returns it
}

// Open opens the state directory dir, creating it (mode 0700) if missing,
// takes its lock, and recovers it: a manifest of an older format is migrated,
// an unusable one set aside, files no manifest names removed. See OpenReport.
//
// It fails with a *DirError if dir is not a private directory of this user,
// a *LockedError (ErrLocked) if another process holds it, and a *FormatError
// (ErrNewerFormat) if a newer dpsagent wrote it; all say what to do.
func Open(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open state directory: no directory given (set advanced.state_dir)")
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs // error messages name the directory an operator can cd to
	}
	if err := prepareDir(dir); err != nil {
		return nil, err
	}
	lock, err := acquireLock(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{
		dir:  dir,
		opts: opts,
		log:  opts.Logger,
		now:  opts.Now,
		lock: lock,
		m:    &Manifest{},
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.log = s.log.Named("store").With(zap.String("state_dir", dir))
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.recover(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	return s, nil
}

// Dir returns the state directory's path.
func (s *Store) Dir() string { return s.dir }

// Report returns what Open found and did.
func (s *Store) Report() OpenReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.report
	r.Removed = slices.Clone(r.Removed)
	return r
}

// Load returns a copy of the committed manifest: the one Open read, or the
// last one committed since.
//
// A directory with no identity is normal, not an error: on a first start
// Load returns an empty manifest (Current nil) and a nil error. When Open set
// an unusable manifest aside, Load returns the empty manifest together with
// the *CorruptError (errors.Is ErrCorrupt) saying why, until the next commit,
// so the agent provisions a new identity and can tell the operator why.
func (s *Store) Load() (*Manifest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	if s.corrupt != nil {
		return s.m.Clone(), s.corrupt
	}
	return s.m.Clone(), nil
}

// Commit makes m the committed manifest, atomically: a crash leaves either
// the previous manifest or m. Every file m names must already be written
// (WriteBlob). After the commit, files the previous manifest named and m does
// not are removed.
func (s *Store) Commit(m *Manifest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if m == nil {
		return fmt.Errorf("commit state in %s: nil manifest (commit &Manifest{} to clear it, or use Reset)", s.dir)
	}
	return s.commit(m.Clone())
}

// Update commits the result of applying fn to a copy of the committed
// manifest. It is Load, edit, Commit without a window in which another
// goroutine's update is lost. If fn returns an error nothing is written.
func (s *Store) Update(fn func(m *Manifest) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	m := s.m.Clone()
	if err := fn(m); err != nil {
		return err
	}
	return s.commit(m)
}

func (s *Store) commit(m *Manifest) error {
	data, err := encodeManifest(m)
	if err != nil {
		return fmt.Errorf("commit state in %s: %w", s.dir, err)
	}
	if err := s.checkFiles(m); err != nil {
		return fmt.Errorf("commit state in %s: %w (write files with WriteBlob before naming them)", s.dir, err)
	}
	// Keep what a restart would read (times in UTC, no monotonic clock), so
	// Load answers the same before and after one.
	committed, _, err := decodeManifest(data)
	if err != nil {
		return fmt.Errorf("commit state in %s: the encoded manifest does not read back: %w", s.dir, err)
	}
	if err := s.writeFile(manifestName, data); err != nil {
		return fmt.Errorf("commit state: %w", err)
	}
	previous := s.m
	s.m = committed
	s.corrupt = nil
	return s.removeFiles(dropped(previous.files(), committed.files()))
}

// dropped returns the names in before that are not in after.
func dropped(before, after []string) []string {
	var out []string
	for _, name := range before {
		if !slices.Contains(after, name) {
			out = append(out, name)
		}
	}
	return out
}

// checkFiles confirms every file m names is a non-empty regular file. The
// store writes a file completely before any manifest names it, so an empty or
// missing one means the directory was damaged from outside.
func (s *Store) checkFiles(m *Manifest) error { return checkFiles(s.dir, m) }

// checkFiles checks that the files m names in dir are there: regular and
// not empty. It only looks, so Peek uses it too.
func checkFiles(dir string, m *Manifest) error {
	for _, which := range []struct {
		name string
		id   *Identity
	}{{"current", m.Current}, {"next", m.Next}} {
		if which.id == nil || which.id.KeyStorage == StorageSAS {
			continue // a sas identity has no files
		}
		for _, f := range []struct{ field, name string }{
			{"key_file", which.id.KeyFile}, {"chain_file", which.id.ChainFile},
		} {
			fi, err := os.Lstat(filepath.Join(dir, f.name))
			switch {
			case errors.Is(err, fs.ErrNotExist):
				return fmt.Errorf("%s.%s %q does not exist", which.name, f.field, f.name)
			case err != nil:
				return fmt.Errorf("%s.%s: %w", which.name, f.field, err)
			case !fi.Mode().IsRegular():
				return fmt.Errorf("%s.%s %q is not a regular file", which.name, f.field, f.name)
			case fi.Size() == 0:
				return fmt.Errorf("%s.%s %q is empty", which.name, f.field, f.name)
			}
		}
	}
	return nil
}

// WriteBlob writes data, exactly as given, to a new file named after pattern
// (the last "*" replaced by random hex digits, or them appended, as with
// os.CreateTemp: "key-*.blob") and returns its name. The file is durable when
// WriteBlob returns but belongs to nothing until a committed manifest names
// it: the next Open removes it otherwise.
func (s *Store) WriteBlob(pattern string, data []byte) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return "", err
	}
	if len(data) == 0 {
		// An empty file is how a damaged directory looks; never write one.
		return "", fmt.Errorf("write blob %q: no data", pattern)
	}
	for range 3 {
		name, err := blobName(pattern)
		if err != nil {
			return "", fmt.Errorf("write blob: %w", err)
		}
		switch _, err := os.Lstat(filepath.Join(s.dir, name)); {
		case err == nil:
			continue // astronomically unlikely; a fresh name costs nothing
		case !errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("write blob %s: %w", name, err)
		}
		if err := s.writeFile(name, data); err != nil {
			return "", err
		}
		return name, nil
	}
	return "", fmt.Errorf("write blob %q: no unused name found", pattern)
}

// ReadFile returns the contents of the file name in the state directory, as
// named by an Identity.
func (s *Store) ReadFile(name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	if err := checkBlobName(name); err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	data, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	return data, nil
}

// RemoveBlob removes a file written by WriteBlob that no committed manifest
// names, e.g. the key of a renewal attempt that failed, so that a daemon
// retrying for days does not pile them up until its next start.
func (s *Store) RemoveBlob(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if err := checkBlobName(name); err != nil {
		return fmt.Errorf("remove state file: %w", err)
	}
	if slices.Contains(s.m.files(), name) {
		return fmt.Errorf("remove state file %s: the committed state names it (commit a manifest without it instead)", name)
	}
	if err := s.step("remove:" + name); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove state file: %w", err)
	}
	return nil
}

// Close releases the directory's lock. Later calls return ErrClosed; Close
// itself may be called again.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close() // closing the descriptor releases the flock
	s.lock = nil
	if err != nil {
		return fmt.Errorf("close state directory %s: %w", s.dir, err)
	}
	return nil
}

func (s *Store) usable() error {
	if s.lock == nil {
		return fmt.Errorf("state directory %s: %w", s.dir, ErrClosed)
	}
	return s.broken
}
