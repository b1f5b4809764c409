package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"
)

// step calls Options.Hook before an operation whose interruption a crash
// test must survive.
func (s *Store) step(name string) error {
	if s.opts.Hook == nil {
		return nil
	}
	if err := s.opts.Hook(name); err != nil {
		// What is on disk now is what a crash at this step leaves behind, and
		// the in-memory state may no longer match it: stop using this Store.
		err = fmt.Errorf("state directory %s: aborted before %s: %w", s.dir, name, err)
		s.broken = err
		return err
	}
	return nil
}

// writeFile replaces (or creates) name with exactly data, atomically and
// durably: temporary file, fsync, rename, fsync the directory. A reader sees
// the old contents or the new, never a mix, even across a power cut.
func (s *Store) writeFile(name string, data []byte) error {
	// CreateTemp makes the file 0600 with O_EXCL; the name starts with a dot,
	// which checkBlobName refuses, so a temporary file is always garbage.
	f, err := os.CreateTemp(s.dir, tempPrefix+name+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	// Before the rename, a failure leaves name as it was: tidy up and report.
	discard := func(err error) error {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		return discard(err)
	}
	if err := s.step("write:" + name + ":fsync"); err != nil {
		_ = f.Close() // as a crash would: the temporary file stays
		return err
	}
	if err := f.Sync(); err != nil {
		return discard(err)
	}
	if err := f.Close(); err != nil {
		return discard(err)
	}
	if err := s.step("rename:" + name); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, name)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := s.step("dirsync:" + name); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		// The rename happened but may not survive a power cut: which version
		// is on disk is unknown until the directory is opened again.
		err = fmt.Errorf("write %s: make the rename durable: %w (restart dpsagent to re-read the state)", name, err)
		s.broken = err
		return err
	}
	return nil
}

// removeFiles deletes files the committed manifest no longer names. It runs
// after the commit, so a failure costs nothing but disk space: what is left
// is garbage that the next Open removes. That is also why the directory is
// not fsynced afterwards. Only a hook abort is returned.
func (s *Store) removeFiles(names []string) error {
	for _, name := range names {
		if err := s.step("remove:" + name); err != nil {
			return err
		}
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("could not remove a file the state no longer names; the next start removes it",
				zap.String("file", name), zap.Error(err))
		}
	}
	return nil
}

// syncDir makes renames and creations in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
