package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"go.uber.org/zap"
)

// recover brings the directory to a state the rest of the Store can trust:
// one usable manifest (possibly empty) and no file it does not name.
func (s *Store) recover() error {
	data, err := readManifest(filepath.Join(s.dir, manifestName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.report.Fresh = true
		s.report.Removed, err = s.collectGarbage()
		return err
	case errors.Is(err, fs.ErrPermission):
		// Not damage: the files belong to someone else. Setting them aside
		// would throw away an identity that a chown would have kept.
		return fmt.Errorf("read state in %s: %w (run dpsagent as the user that owns the directory, "+
			"or chown -R it to the user the daemon runs as)", s.dir, err)
	case err != nil:
		return s.setAside("corrupt", err)
	}

	m, version, err := decodeManifest(data)
	if fe := (*FormatError)(nil); errors.As(err, &fe) {
		fe.Dir = s.dir
		if !s.opts.SetAsideNewerFormat {
			return fe
		}
		return s.setAside("newer", fe)
	}
	if err != nil {
		return s.setAside("corrupt", err)
	}
	m, droppedNext, err := settle(m, s.checkFiles)
	if err != nil {
		return s.setAside("corrupt", err)
	}
	if droppedNext != nil || version != FormatVersion {
		// Rewritten now rather than on the next change, so that from here on
		// only the current format, and only usable identities, are on disk.
		if err := s.commit(m); err != nil {
			return fmt.Errorf("rewrite state in %s: %w", s.dir, err)
		}
	} else {
		s.m = m
	}
	if droppedNext != nil {
		s.report.DroppedNext = droppedNext
		s.log.Warn("dropped the staged next identity; the current one is kept", zap.Error(droppedNext))
	}
	if version != FormatVersion {
		s.report.Migrated, s.report.MigratedFrom = true, version
		s.log.Info("migrated the state to the current format",
			zap.Int("from_format", version), zap.Int("to_format", FormatVersion))
	}
	s.report.Removed, err = s.collectGarbage()
	return err
}

// errManifestTooLarge: the manifest is over maxManifestSize, which is damage.
var errManifestTooLarge = errors.New("state too large")

// readManifest reads at most maxManifestSize bytes; more is corruption.
func readManifest(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", manifestName, err)
	}
	if len(data) > maxManifestSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", errManifestTooLarge, manifestName, maxManifestSize)
	}
	return data, nil
}

// settle decides which manifest to use: m, or m without its staged next
// identity when only that one is unusable, because a failed renewal must not
// cost the working identity. checkFiles checks the named files on disk.
func settle(m *Manifest, checkFiles func(*Manifest) error) (use *Manifest, droppedNext, err error) {
	check := func(m *Manifest) error {
		if err := m.validate(); err != nil {
			return err
		}
		return checkFiles(m)
	}
	err = check(m)
	if err == nil {
		return m, nil, nil
	}
	if m.Next == nil {
		return nil, nil, err
	}
	without := m.Clone()
	without.Next = nil
	if check(without) != nil {
		return nil, nil, err
	}
	return without, err, nil
}

// collectGarbage removes the regular files (and symlinks) at the top of the
// directory that are neither reserved nor named by the committed manifest:
// temporary files and blobs of an interrupted run. Anything else (a
// directory, a socket) is not ours to delete and is only reported.
func (s *Store) collectGarbage() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list state directory %s: %w", s.dir, err)
	}
	named := s.m.files()
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if reserved(name) || slices.Contains(named, name) {
			continue
		}
		if t := e.Type(); !t.IsRegular() && t&fs.ModeSymlink == 0 {
			s.log.Warn("left an unexpected entry in the state directory alone",
				zap.String("name", name), zap.Stringer("type", t))
			continue
		}
		if err := s.step("remove:" + name); err != nil {
			return removed, err
		}
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("remove left-over file %s from %s: %w", name, s.dir, err)
		}
		removed = append(removed, name)
	}
	if len(removed) > 0 {
		s.log.Info("removed files left by an interrupted run", zap.Strings("files", removed))
	}
	return removed, nil
}

// setAside moves an unusable manifest to state.json.<kind>-<ts> and every
// other unreserved entry into quarantine-<ts>/, deleting nothing. The other
// files go first: a crash before the manifest's rename leaves it in place,
// still unusable, and the next Open finishes the job; in the other order that
// Open would find no manifest and take the files for garbage.
func (s *Store) setAside(kind string, reason error) error {
	ts := s.now().UTC().Format("20060102T150405Z")
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("list state directory %s: %w", s.dir, err)
	}
	var quarantine string
	for _, e := range entries {
		name := e.Name()
		if reserved(name) {
			continue
		}
		if quarantine == "" {
			if quarantine, err = s.unusedName(quarantinePrefix + ts); err != nil {
				return err
			}
			if err := os.Mkdir(filepath.Join(s.dir, quarantine), 0o700); err != nil {
				return fmt.Errorf("set aside unusable state in %s: %w", s.dir, err)
			}
		}
		if err := s.step("move:" + name); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(s.dir, name), filepath.Join(s.dir, quarantine, name)); err != nil {
			return fmt.Errorf("set aside unusable state in %s: move %s: %w", s.dir, name, err)
		}
	}
	if quarantine != "" {
		if err := s.step("dirsync:" + quarantine); err != nil {
			return err
		}
		if err := syncDir(filepath.Join(s.dir, quarantine)); err != nil {
			return fmt.Errorf("set aside unusable state in %s: %w", s.dir, err)
		}
	}
	movedTo, err := s.unusedName(manifestName + "." + kind + "-" + ts)
	if err != nil {
		return err
	}
	if err := s.step("move:" + manifestName); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(s.dir, manifestName), filepath.Join(s.dir, movedTo)); err != nil {
		return fmt.Errorf("set aside unusable state in %s: %w", s.dir, err)
	}
	if err := s.step("dirsync:move"); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("set aside unusable state in %s: %w", s.dir, err)
	}
	s.m = &Manifest{}
	s.corrupt = &CorruptError{Dir: s.dir, MovedTo: filepath.Join(s.dir, movedTo), Reason: reason}
	if quarantine != "" {
		s.corrupt.Quarantine = filepath.Join(s.dir, quarantine)
	}
	s.report.Corrupt = s.corrupt
	s.log.Warn("set the unusable state aside; a new identity will be provisioned",
		zap.Error(reason), zap.String("moved_to", s.corrupt.MovedTo), zap.String("quarantine", s.corrupt.Quarantine))
	return nil
}

// unusedName returns base, or base-N for the smallest N ≥ 2 that is free:
// two set-asides can happen within one second (a crash loop, a test).
func (s *Store) unusedName(base string) (string, error) {
	name := base
	for n := 2; ; n++ {
		_, err := os.Lstat(filepath.Join(s.dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return name, nil
		}
		if err != nil {
			return "", fmt.Errorf("set aside unusable state in %s: %w", s.dir, err)
		}
		name = base + "-" + strconv.Itoa(n)
	}
}
