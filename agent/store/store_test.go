package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestOpenCreatesPrivateDirectory(t *testing.T) {
	dir := stateDir(t)
	s := openStore(t, dir, testOptions(t))

	checkMode(t, dir, 0o700)
	checkMode(t, filepath.Join(dir, lockName), 0o600)
	if !s.Report().Fresh {
		t.Error("Report().Fresh = false for a directory Open created")
	}
	m, err := s.Load()
	if err != nil {
		t.Fatalf("Load on a fresh directory: %v, want no error", err)
	}
	if m.Current != nil || m.Next != nil {
		t.Errorf("Load on a fresh directory = %+v, want no identity", m)
	}

	id := writeIdentity(t, s, "A")
	if err := s.Commit(&Manifest{Current: &id}); err != nil {
		t.Fatal(err)
	}
	for _, name := range listDir(t, dir) {
		checkMode(t, filepath.Join(dir, name), 0o600)
	}
}

func TestOpenRefusesUnsafeDirectory(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T) string
		wantText string
	}{
		{"group can read", func(t *testing.T) string { return mkdirMode(t, 0o750) }, "chmod 700"},
		{"others can enter", func(t *testing.T) string { return mkdirMode(t, 0o701) }, "chmod 700"},
		{"not a directory", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "state")
			writeRaw(t, filepath.Dir(path), "state", []byte("x"))
			return path
		}, "is not a directory"},
		{"parent missing", func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "missing", "state")
		}, "create its parent directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.setup(t)
			before, _ := os.Stat(dir)
			s, err := Open(dir, testOptions(t))
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded, want a refusal")
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Open: %v\nwant a message containing %q", err, tt.wantText)
			}
			if after, _ := os.Stat(dir); before != nil && after.Mode() != before.Mode() {
				t.Errorf("Open changed the mode of a directory it refused: %v -> %v", before.Mode(), after.Mode())
			}
		})
	}
}

func mkdirMode(t *testing.T, mode os.FileMode) string {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestSequences runs commit/stage/promote/discard/reset sequences and checks
// what a user relies on: which identity is current and staged, that its files
// hold what was written, and that nothing else is left in the directory, both
// right away and after a restart.
func TestSequences(t *testing.T) {
	type op func(t *testing.T, s *Store) error
	commit := func(tag string) op {
		return func(t *testing.T, s *Store) error {
			id := writeIdentity(t, s, tag)
			return s.Update(func(m *Manifest) error { m.Current = &id; return nil })
		}
	}
	stage := func(tag string) op {
		return func(t *testing.T, s *Store) error { return s.StageNext(writeIdentity(t, s, tag)) }
	}
	promote := func(t *testing.T, s *Store) error { return s.PromoteNext() }
	discard := func(t *testing.T, s *Store) error { return s.DiscardNext() }
	reset := func(t *testing.T, s *Store) error { return s.Reset() }
	pending := func(t *testing.T, s *Store) error { // a renewal attempt that never got staged
		_, err := s.WriteBlob("key-*.blob", []byte("abandoned"))
		return err
	}

	tests := []struct {
		name                 string
		ops                  []op
		wantCurrent, wantNxt string
		wantErr              error // from the last op
	}{
		{"first provisioning", []op{commit("A")}, "A", "", nil},
		{"replace current", []op{commit("A"), commit("B")}, "B", "", nil},
		{"stage", []op{commit("A"), stage("B")}, "A", "B", nil},
		{"stage then promote", []op{commit("A"), stage("B"), promote}, "B", "", nil},
		{"stage then discard", []op{commit("A"), stage("B"), discard}, "A", "", nil},
		{"restage replaces", []op{commit("A"), stage("B"), stage("C")}, "A", "C", nil},
		{"two rotations", []op{commit("A"), stage("B"), promote, stage("C"), promote}, "C", "", nil},
		{"discard with nothing staged", []op{commit("A"), discard}, "A", "", nil},
		{"reset", []op{commit("A"), stage("B"), reset}, "", "", nil},
		{"reset drops uncommitted blobs", []op{commit("A"), pending, reset}, "", "", nil},
		{"provision after reset", []op{commit("A"), reset, commit("B")}, "B", "", nil},
		{"stage without current", []op{stage("A")}, "", "", ErrNoCurrent},
		{"promote without next", []op{commit("A"), promote}, "A", "", ErrNoNext},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := stateDir(t)
			s := openStore(t, dir, testOptions(t))
			var err error
			for _, op := range tt.ops {
				if err = op(t, s); err != nil && tt.wantErr == nil {
					t.Fatalf("unexpected error: %v", err)
				}
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("last step: %v, want %v", err, tt.wantErr)
			}
			check := func(s *Store) {
				t.Helper()
				m, err := s.Load()
				if err != nil {
					t.Fatal(err)
				}
				if got := tagOf(m.Current); got != tt.wantCurrent {
					t.Errorf("current = %q, want %q", got, tt.wantCurrent)
				}
				if got := tagOf(m.Next); got != tt.wantNxt {
					t.Errorf("next = %q, want %q", got, tt.wantNxt)
				}
				for _, id := range []*Identity{m.Current, m.Next} {
					if id != nil {
						checkIdentityFiles(t, s, id)
					}
				}
				if tt.name != "stage without current" { // that one never committed anything
					checkOnlyNamedFiles(t, s, m, true)
					checkMode(t, filepath.Join(s.Dir(), manifestName), 0o600)
				}
			}
			check(s)
			s.Close()
			s2 := openStore(t, dir, testOptions(t))
			check(s2)
			if r := s2.Report(); r.Corrupt != nil || r.DroppedNext != nil {
				t.Errorf("reopen reported problems: %+v", r)
			}
		})
	}
}

// TestCommitRefusesWhatItCouldNotReadBack: a manifest the store would set
// aside on the next start must not be written in the first place, and a
// refused commit changes nothing.
func TestCommitRefusesWhatItCouldNotReadBack(t *testing.T) {
	tests := []struct {
		name string
		edit func(id *Identity, s *Store)
		want string
	}{
		{"path traversal", func(id *Identity, _ *Store) { id.KeyFile = "../outside.blob" }, "key_file"},
		{"reserved name", func(id *Identity, _ *Store) { id.ChainFile = "lock" }, "reserved"},
		{"missing file", func(id *Identity, _ *Store) { id.KeyFile = "key-never-written.blob" }, "does not exist"},
		{"same file twice", func(id *Identity, _ *Store) { id.ChainFile = id.KeyFile }, "named twice"},
		{"unknown algorithm", func(id *Identity, _ *Store) { id.KeyAlgorithm = "ecdsa-p521" }, "key_algorithm"},
		{"unknown storage", func(id *Identity, _ *Store) { id.KeyStorage = "" }, "key_storage"},
		{"unknown path", func(id *Identity, _ *Store) { id.Path = "sas" }, "path"},
		{"no device id", func(id *Identity, _ *Store) { id.DeviceID = "" }, "device_id"},
		{"no hub", func(id *Identity, _ *Store) { id.AssignedHub = "" }, "assigned_hub"},
		{"year 10000", func(id *Identity, _ *Store) { id.NotAfter = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "not_after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, stateDir(t), testOptions(t))
			good := writeIdentity(t, s, "A")
			if err := s.Commit(&Manifest{Current: &good}); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(filepath.Join(s.Dir(), manifestName))
			bad := writeIdentity(t, s, "B")
			tt.edit(&bad, s)
			err := s.Commit(&Manifest{Current: &bad})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Commit: %v, want an error mentioning %q", err, tt.want)
			}
			after, _ := os.ReadFile(filepath.Join(s.Dir(), manifestName))
			if !bytes.Equal(before, after) {
				t.Error("a refused commit changed state.json")
			}
			m, _ := s.Load()
			if tagOf(m.Current) != "A" {
				t.Errorf("after a refused commit current = %q, want A", tagOf(m.Current))
			}
			checkIdentityFiles(t, s, m.Current)
		})
	}
}

func TestWriteBlob(t *testing.T) {
	s := openStore(t, stateDir(t), testOptions(t))
	data := []byte{0, 1, 2, 0xff, '\n', '\r', 0}
	name, err := s.WriteBlob("key-*.blob", data)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "key-") || !strings.HasSuffix(name, ".blob") || len(name) != len("key-.blob")+16 {
		t.Errorf("WriteBlob named the file %q, want key-<16 hex digits>.blob", name)
	}
	got, err := s.ReadFile(name)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("ReadFile = %q, %v; want exactly %q", got, err, data)
	}
	checkMode(t, filepath.Join(s.Dir(), name), 0o600)

	other, err := s.WriteBlob("key-*.blob", data)
	if err != nil || other == name {
		t.Errorf("second blob with the same contents: %q, %v; want a different name", other, err)
	}
	noStar, err := s.WriteBlob("chain-", data)
	if err != nil || !strings.HasPrefix(noStar, "chain-") {
		t.Errorf("pattern without '*': %q, %v; want chain-<random>", noStar, err)
	}

	for _, pattern := range []string{"../key-*", "sub/key-*", ".hidden-*", "state.json.*", "quarantine-*", "a*b*"} {
		if name, err := s.WriteBlob(pattern, data); err == nil {
			t.Errorf("WriteBlob(%q) wrote %q, want a refusal", pattern, name)
		}
	}
	if _, err := s.WriteBlob("key-*", nil); err == nil {
		t.Error("WriteBlob with no data succeeded; an empty file is how damage looks")
	}
	for _, name := range []string{manifestName, lockName, "../etc/passwd", ""} {
		if _, err := s.ReadFile(name); err == nil {
			t.Errorf("ReadFile(%q) succeeded, want a refusal", name)
		}
	}
}

func TestRemoveBlob(t *testing.T) {
	s := openStore(t, stateDir(t), testOptions(t))
	id := writeIdentity(t, s, "A")
	if err := s.Commit(&Manifest{Current: &id}); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveBlob(id.KeyFile); err == nil {
		t.Error("RemoveBlob removed the current key")
	}
	checkIdentityFiles(t, s, &id)

	abandoned, err := s.WriteBlob("key-*.blob", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveBlob(abandoned); err != nil {
		t.Fatal(err)
	}
	m, _ := s.Load()
	checkOnlyNamedFiles(t, s, m, true)
}

// TestManifestFormat pins the JSON a status screen, a support engineer or a
// later dpsagent reads: snake_case, RFC 3339 UTC, null for unknown.
func TestManifestFormat(t *testing.T) {
	s := openStore(t, stateDir(t), testOptions(t))
	cur := writeIdentity(t, s, "A")
	next := writeIdentity(t, s, "B")
	next.Path, next.ProvisionedAt, next.Serial, next.NotBefore, next.NotAfter = PathHub, time.Time{}, "", time.Time{}, time.Time{}
	at := time.Date(2025, 1, 1, 13, 0, 0, 500_000_000, time.FixedZone("CET", 3600))
	m := &Manifest{
		IDScope:          "0ne00000001",
		Current:          &cur,
		Next:             &next,
		LastRegistration: &Registration{At: at, OperationID: "4.d0a0f6f5e8c8a6b2.5f4b", Status: "assigned", Substatus: "initialAssignment"},
	}
	if err := s.Commit(m); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(s.Dir(), manifestName))
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "format_version": 1,
  "id_scope": "0ne00000001",
  "current": {
    "key_file": "` + cur.KeyFile + `",
    "chain_file": "` + cur.ChainFile + `",
    "key_algorithm": "ecdsa-p384",
    "key_storage": "tpm",
    "registration_id": "gateway-001",
    "device_id": "gateway-001",
    "assigned_hub": "hub-A.azure-devices.net",
    "provisioned_at": "2025-01-01T12:00:00Z",
    "path": "dps",
    "serial": "A",
    "not_before": "2025-01-01T11:55:00Z",
    "not_after": "2025-03-01T11:55:00Z"
  },
  "next": {
    "key_file": "` + next.KeyFile + `",
    "chain_file": "` + next.ChainFile + `",
    "key_algorithm": "ecdsa-p384",
    "key_storage": "tpm",
    "registration_id": "gateway-001",
    "device_id": "gateway-001",
    "assigned_hub": "hub-B.azure-devices.net",
    "provisioned_at": null,
    "path": "hub",
    "serial": null,
    "not_before": null,
    "not_after": null
  },
  "last_registration": {
    "at": "2025-01-01T12:00:00.5Z",
    "operation_id": "4.d0a0f6f5e8c8a6b2.5f4b",
    "status": "assigned",
    "substatus": "initialAssignment"
  },
  "last_error": null
}
`
	if string(got) != want {
		t.Errorf("state.json =\n%s\nwant\n%s", got, want)
	}
	var generic map[string]any
	if err := json.Unmarshal(got, &generic); err != nil {
		t.Fatalf("state.json is not JSON: %v", err)
	}
}

// TestStagePromoteStepOrder: the old identity's files go only after the
// manifest that stops naming them is durable.
func TestStagePromoteStepOrder(t *testing.T) {
	var steps []string
	opts := testOptions(t)
	opts.Hook = func(step string) error { steps = append(steps, step); return nil }
	s := openStore(t, stateDir(t), opts)
	a := writeIdentity(t, s, "A")
	if err := s.Commit(&Manifest{Current: &a}); err != nil {
		t.Fatal(err)
	}
	b := writeIdentity(t, s, "B")
	if err := s.StageNext(b); err != nil {
		t.Fatal(err)
	}
	steps = nil
	if err := s.PromoteNext(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"write:state.json:fsync", "rename:state.json", "dirsync:state.json",
		"remove:" + a.KeyFile, "remove:" + a.ChainFile,
	}
	if !slices.Equal(steps, want) {
		t.Errorf("PromoteNext steps = %q\nwant %q", steps, want)
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(stateDir(t), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrClosed) {
		t.Errorf("Load after Close: %v, want ErrClosed", err)
	}
	if _, err := s.WriteBlob("key-*", []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteBlob after Close: %v, want ErrClosed", err)
	}
}

// TestNeverLogsFileContents runs everything that logs (garbage collection,
// a corrupt manifest set aside) with software-key-like contents and checks
// that no log line carries them.
func TestNeverLogsFileContents(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	opts := testOptions(t)
	opts.Logger = zap.New(core)
	dir := stateDir(t)
	s := openStore(t, dir, opts)
	id := writeIdentity(t, s, "SECRET")
	if err := s.Commit(&Manifest{Current: &id}); err != nil {
		t.Fatal(err)
	}
	if err := s.StageNext(writeIdentity(t, s, "SECRET2")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteBlob("key-*.blob", keyBytes("SECRET3")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	openStore(t, dir, opts).Close() // removes the uncommitted blob: logged
	writeRaw(t, dir, manifestName, append([]byte("{"), keyBytes("SECRET4")...))
	openStore(t, dir, opts).Close() // sets the manifest aside: logged

	if logs.Len() == 0 {
		t.Fatal("nothing was logged; the test would prove nothing")
	}
	for _, e := range logs.All() {
		line, _ := json.Marshal(e.ContextMap())
		text := e.Message + string(line)
		if strings.Contains(text, "SECRET") || strings.Contains(text, "BEGIN CERTIFICATE") {
			t.Errorf("a log entry carries file contents: %s", text)
		}
	}
}

// TestLoadMatchesRestart: what Load returns right after a commit is what a
// restarted agent reads, even for times given in another zone.
func TestLoadMatchesRestart(t *testing.T) {
	dir := stateDir(t)
	s := openStore(t, dir, testOptions(t))
	id := writeIdentity(t, s, "A")
	id.ProvisionedAt = time.Now() // local zone, monotonic reading
	m := &Manifest{Current: &id, LastError: &Failure{At: time.Now(), Message: "no route to host", Hint: "check the network"}}
	if err := s.Commit(m); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Load()
	if !before.Current.ProvisionedAt.Equal(id.ProvisionedAt) || before.Current.ProvisionedAt.Location() != time.UTC {
		t.Errorf("provisioned_at = %v, want %v in UTC", before.Current.ProvisionedAt, id.ProvisionedAt)
	}
	s.Close()
	after, err := openStore(t, dir, testOptions(t)).Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("Load before a restart = %+v\nafter = %+v", before, after)
	}
}
