package emulator

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/internal/atomicfile"
)

// The State keeps RegistryDir in step with its devices. What is saved, and
// when:
//
//   - A change IoT Hub would keep (DPS creating or updating a device, a
//     revocation, a certificate issued through the credential API, a twin
//     patch from either side) is in the device's file before the call that
//     made it returns, so a device told "assigned" or "204" finds the same
//     after a restart. The file is replaced atomically (atomicfile).
//   - Connecting, disconnecting and telemetry write nothing: they are the hot
//     paths, and what they change (connected, auth method, the last messages)
//     describes a connection, which a restart ends anyway.
//   - MQTT sessions, pending direct methods and credential operations end with
//     their connection or the process. The cloud-to-device queues are not kept
//     either, although IoT Hub keeps them durably: every send and every PUBACK
//     would have to write, for messages that expire within the hour by
//     default; the README states the difference.
//
// A device's file is encoded from the device under the State's lock (the
// twin's maps change in place) and written outside it. Writes of one device
// are ordered: a change arriving while its device's file is being written
// waits, and the next write carries it and any others made meanwhile.

// registryStore is the file side of the registry. The change numbers it
// compares live in the State, under the State's lock.
type registryStore struct {
	dir string
	log *zap.Logger

	mu      sync.Mutex
	done    *sync.Cond        // broadcast when a write ends
	writing map[string]bool   // keys whose file is being written
	saved   map[string]uint64 // by key: the change number its file holds
}

// openRegistry loads dir into s, which must hold no devices yet, and saves
// every later change there. A missing directory is an empty registry; a file
// that cannot be read or decoded is an error that names it and the way out,
// never a silent skip: a device forgotten without a word would look like a
// hub bug.
func (s *State) openRegistry(dir string, log *zap.Logger) error {
	devices, err := readRegistry(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the device registry: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range devices {
		s.devices[strings.ToLower(d.DeviceID)] = d
	}
	st := &registryStore{dir: dir, log: log, writing: map[string]bool{}, saved: map[string]uint64{}}
	st.done = sync.NewCond(&st.mu)
	s.store = st
	log.Info("device registry loaded", zap.String("directory", dir), zap.Int("devices", len(devices)))
	return nil
}

// readRegistry reads every device file in dir.
func readRegistry(dir string) ([]*Device, error) {
	var devices []*Device
	err := forEachRecordFile(dir, "the device registry", func(path string) error {
		d, err := readRegistryFile(path)
		if err != nil {
			return fmt.Errorf("device registry file %s: %w; delete it to forget that device (it then registers with DPS again), or delete %s to start with an empty registry", path, err, dir)
		}
		devices = append(devices, d)
		return nil
	})
	return devices, err
}

// forEachRecordFile calls read with the path of each record file in dir
// (the device registry's, the enrollments'), stopping at its first error. A
// missing directory holds none. Names starting with a dot (temporary files a
// crash left behind), names not ending in .json and directories are not
// records and are passed over.
func forEachRecordFile(dir, what string, read func(path string) error) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	for _, ent := range entries {
		name := ent.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") || ent.IsDir() {
			continue
		}
		if err := read(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

func readRegistryFile(path string) (*Device, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	d, err := decodeRegistryEntry(data)
	if err != nil {
		return nil, err
	}
	// The name is derived from the ID: a file renamed or copied by hand
	// would be a second file for one device, or one never written again.
	if want := registryFileName(strings.ToLower(d.DeviceID)); filepath.Base(path) != want {
		return nil, fmt.Errorf("it holds device %q, whose file is %s", d.DeviceID, want)
	}
	return d, nil
}

// noteLocked records that the device stored under key changed in a way the
// registry keeps, and returns the change's number for save. The caller holds
// s.mu.
func (s *State) noteLocked(key string) uint64 {
	if s.store == nil {
		return 0
	}
	s.changes++
	s.lastChange[key] = s.changes
	return s.changes
}

// save returns once the file of the device stored under key holds change seq
// (or a later state), writing it unless a write under way does. A failed
// write leaves the change in memory, where the device's next successful
// write picks it up. The caller must not hold s.mu.
func (s *State) save(key string, seq uint64) error {
	st := s.store
	if st == nil || seq == 0 {
		return nil
	}
	st.mu.Lock()
	for st.writing[key] && st.saved[key] < seq {
		st.done.Wait()
	}
	if st.saved[key] >= seq {
		st.mu.Unlock()
		return nil
	}
	st.writing[key] = true
	st.mu.Unlock()

	upto, err := s.writeDevice(st, key)

	st.mu.Lock()
	delete(st.writing, key)
	if err == nil {
		st.saved[key] = max(st.saved[key], upto)
	}
	st.done.Broadcast()
	st.mu.Unlock()
	return err
}

// writeDevice writes the device's file as the device is now, and returns
// the change number that state includes.
func (s *State) writeDevice(st *registryStore, key string) (uint64, error) {
	s.mu.Lock()
	d, ok := s.devices[key]
	var (
		data []byte
		err  error
	)
	switch {
	case !ok:
		err = fmt.Errorf("no device %q to save", key)
	case d.DeviceID == "":
		err = errors.New("a device without an ID cannot be saved")
	default:
		data, err = encodeRegistryEntry(d)
	}
	upto := s.lastChange[key]
	s.mu.Unlock()

	path := filepath.Join(st.dir, registryFileName(key))
	if err == nil {
		err = atomicfile.Write(path, data)
	}
	if err != nil {
		st.log.Error("device registry not saved; the change stays in memory and is saved with the device's next one",
			zap.String("file", path), zap.Error(err))
		return 0, fmt.Errorf("save the device registry: %w", err)
	}
	return upto, nil
}
