package emulator

import (
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/internal/atomicfile"
)

// The State keeps EnrollmentsDir in step with the admin API's enrollment
// changes. A change is in its file before it is in memory, so the API never
// answers 201, 200 or 204 for one a restart would lose; a change that cannot
// be saved is not made. Changes are few (people and test scripts make them),
// so one lock orders them all.
//
// Precedence, when the configuration file and EnrollmentsDir both speak of
// an enrollment: the admin API's change wins while the configuration file
// still defines that enrollment as it did when the change was made (or still
// does not define it). Once the user has edited, added or removed it in the
// file, the file wins: the edit is the newer wish, and the file is what the
// user maintains. The dropped change's file is removed, so undoing the edit
// later does not bring the change back. Each case is logged.

// enrollmentStore is the file side of the enrollments.
type enrollmentStore struct {
	dir string
	log *zap.Logger
	// config digests the configuration file's enrollments, by key; it does
	// not change while the emulator runs.
	config map[string]string
}

// openEnrollments applies the admin API's changes kept in dir over the
// configuration file's enrollments, which s holds already, and saves every
// later change there. A missing directory holds no changes; a file that
// cannot be read or decoded is an error that names it and the way out.
func (s *State) openEnrollments(dir string, hubs map[string]bool, log *zap.Logger) error {
	records, err := readEnrollments(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the enrollments directory: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &enrollmentStore{dir: dir, log: log, config: map[string]string{}}
	for key, e := range s.enrollments {
		st.config[key] = configDigest(*e)
	}
	kept := 0
	for path, r := range records {
		if s.applyRecordLocked(st, path, r, hubs) {
			kept++
		}
	}
	s.enrollStore = st
	log.Info("enrollments loaded", zap.String("directory", dir), zap.Int("enrollments", len(s.enrollments)),
		zap.Int("admin_api_changes", kept))
	return nil
}

// applyRecordLocked applies one file by the precedence rule above, and
// reports whether the change it holds stands. The caller holds s.mu.
func (s *State) applyRecordLocked(st *enrollmentStore, path string, r enrollmentRecord, hubs map[string]bool) bool {
	digest, inConfig := st.config[r.Enrollment]
	log := st.log.With(zap.String("enrollment", r.Enrollment), zap.String("file", path))
	if digest != r.ConfigSHA256 {
		log.Warn("the configuration file was edited after the admin API changed this enrollment: the configuration file's version is used, and the admin API's change is dropped",
			zap.Bool("in_configuration", inConfig))
		if err := atomicfile.Remove(path); err != nil {
			log.Error("could not remove the dropped change's file; delete it by hand", zap.Error(err))
		}
		return false
	}
	if r.Deleted {
		delete(s.enrollments, r.Enrollment)
		log.Warn("deleted through the admin API: the configuration file's definition is not used; delete the file to use it")
		return true
	}
	def := *r.Definition
	s.enrollments[r.Enrollment] = &def
	if inConfig {
		log.Warn("changed through the admin API: this version overrides the configuration file's until the configuration file's is edited; delete the file to use the configuration file's now")
	}
	for _, h := range def.Hubs {
		if !hubs[h] {
			log.Warn("the enrollment names a hub the configuration does not have; DPS assigns its devices to the others it names", zap.String("hub", h))
		}
	}
	return true
}

// readEnrollments reads every enrollment file in dir (forEachRecordFile), by
// path.
func readEnrollments(dir string) (map[string]enrollmentRecord, error) {
	records := map[string]enrollmentRecord{}
	err := forEachRecordFile(dir, "the enrollments", func(path string) error {
		r, err := readEnrollmentFile(path)
		if err != nil {
			return fmt.Errorf("enrollment file %s: %w; delete it to undo the admin API's change to that enrollment (the configuration file's definition, if any, is used), or delete %s to undo them all", path, err, dir)
		}
		records[path] = r
		return nil
	})
	return records, err
}

func readEnrollmentFile(path string) (enrollmentRecord, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return enrollmentRecord{}, err
	}
	r, err := decodeEnrollmentRecord(data)
	if err != nil {
		return enrollmentRecord{}, err
	}
	// The name is derived from the key: a file renamed or copied by hand
	// would be a second file for one enrollment.
	if want := enrollmentFileName(r.Enrollment); filepath.Base(path) != want {
		return enrollmentRecord{}, fmt.Errorf("it holds enrollment %s, whose file is %s", r.Enrollment, want)
	}
	return r, nil
}

// save makes the file of the enrollment stored under key say def, or, for
// def nil, that it is deleted: a tombstone when the configuration file
// defines it, no file otherwise. A nil store keeps nothing.
func (st *enrollmentStore) save(key string, def *Enrollment) error {
	if st == nil {
		return nil
	}
	path := filepath.Join(st.dir, enrollmentFileName(key))
	digest, inConfig := st.config[key]
	var err error
	if def == nil && !inConfig {
		err = atomicfile.Remove(path)
	} else {
		var data []byte
		if data, err = encodeEnrollmentRecord(key, def, digest); err == nil {
			// What iotemu writes, it must read back at its next start.
			if _, err = decodeEnrollmentRecord(data); err == nil {
				err = atomicfile.Write(path, data)
			}
		}
	}
	if err != nil {
		st.log.Error("enrollment change not saved, and so not made", zap.String("enrollment", key), zap.String("file", path), zap.Error(err))
		return fmt.Errorf("save enrollment %s: %w", key, err)
	}
	return nil
}
