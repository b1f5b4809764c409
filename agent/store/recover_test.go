package store

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// findAll counts the files under dir, at any depth, that hold exactly data.
func findAll(t *testing.T, dir string, data []byte) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Equal(b, data) {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// committedDir returns a directory holding identity A as current, the store closed.
func committedDir(t *testing.T) (string, Identity) {
	t.Helper()
	dir := stateDir(t)
	s := openStore(t, dir, testOptions(t))
	id := writeIdentity(t, s, "A")
	if err := s.Commit(&Manifest{IDScope: "0ne00000001", Current: &id}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	return dir, id
}

func TestOpenRemovesGarbage(t *testing.T) {
	dir, id := committedDir(t)
	garbage := []string{".tmp-state.json-123", ".tmp-key-0011.blob-99", "key-0011223344556677.blob", "notes.txt"}
	for _, name := range garbage {
		writeRaw(t, dir, name, []byte("left over"))
	}
	keep := []string{"state.json.corrupt-20240101T000000Z"}
	writeRaw(t, dir, keep[0], []byte("{"))
	for _, d := range []string{"quarantine-20240101T000000Z", "someone-elses-dir"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
		keep = append(keep, d)
	}

	s := openStore(t, dir, testOptions(t))
	removed := s.Report().Removed
	slices.Sort(removed)
	slices.Sort(garbage)
	if !slices.Equal(removed, garbage) {
		t.Errorf("Report().Removed = %q, want %q", removed, garbage)
	}
	want := append([]string{lockName, manifestName, id.KeyFile, id.ChainFile}, keep...)
	slices.Sort(want)
	if got := listDir(t, dir); !slices.Equal(got, want) {
		t.Errorf("directory holds %q, want %q", got, want)
	}
	checkIdentityFiles(t, s, &id)
}

// TestCorruptManifestIsSetAside: whatever is wrong with the manifest, it is
// renamed (never deleted), the files beside it are quarantined (never
// deleted), Load says why, and the agent can provision afresh.
func TestCorruptManifestIsSetAside(t *testing.T) {
	tests := []struct {
		name     string
		manifest func(id Identity) string
		want     string // in the reason
	}{
		{"not JSON", func(Identity) string { return `{"format_version": 1, "current": {` }, "not a JSON object"},
		{"empty file", func(Identity) string { return `` }, "not a JSON object"},
		{"null", func(Identity) string { return `null` }, "not a JSON object"},
		{"array", func(Identity) string { return `[1]` }, "not a JSON object"},
		{"wrong type", func(id Identity) string {
			return `{"format_version": 1, "current": {"key_file": "` + id.KeyFile + `", "device_id": 5}}`
		}, "current.device_id"},
		{"version not a number", func(Identity) string { return `{"format_version": "1"}` }, "format_version"},
		{"version zero", func(Identity) string { return `{"format_version": 0}` }, "format_version"},
		{"bad time", func(id Identity) string {
			return validV1(id, `"provisioned_at": "yesterday"`)
		}, "provisioned_at"},
		{"named key missing", func(id Identity) string {
			return strings.Replace(validV1(id, ""), id.KeyFile, "key-ffffffffffffffff.blob", 1)
		}, "does not exist"},
		{"names a file outside", func(id Identity) string {
			return strings.Replace(validV1(id, ""), id.KeyFile, "../../etc/passwd", 1)
		}, "key_file"},
		{"names the lock", func(id Identity) string {
			return strings.Replace(validV1(id, ""), id.ChainFile, "lock", 1)
		}, "reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, id := committedDir(t)
			bad := []byte(tt.manifest(id))
			writeRaw(t, dir, manifestName, bad)
			writeRaw(t, dir, ".tmp-state.json-7", []byte("half a manifest"))

			s := openStore(t, dir, testOptions(t))
			m, err := s.Load()
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load: %v, want a *CorruptError", err)
			}
			if !strings.Contains(ce.Reason.Error(), tt.want) {
				t.Errorf("reason %q does not mention %q", ce.Reason, tt.want)
			}
			if m == nil || m.Current != nil {
				t.Errorf("Load returned %+v, want an empty manifest to provision into", m)
			}
			if s.Report().Corrupt == nil {
				t.Error("Report().Corrupt is nil")
			}

			wantAside := filepath.Join(dir, "state.json.corrupt-20250102T030405Z")
			if ce.MovedTo != wantAside {
				t.Errorf("moved to %s, want %s", ce.MovedTo, wantAside)
			}
			if got, _ := os.ReadFile(wantAside); !bytes.Equal(got, bad) {
				t.Errorf("the set-aside manifest holds %q, want the original %q", got, bad)
			}
			q := filepath.Join(dir, "quarantine-20250102T030405Z")
			if ce.Quarantine != q {
				t.Errorf("quarantine = %s, want %s", ce.Quarantine, q)
			}
			for name, want := range map[string][]byte{
				id.KeyFile: keyBytes("A"), id.ChainFile: chainBytes("A"), ".tmp-state.json-7": []byte("half a manifest"),
			} {
				if got, err := os.ReadFile(filepath.Join(q, name)); err != nil || !bytes.Equal(got, want) {
					t.Errorf("quarantined %s: %q, %v; want its original contents", name, got, err)
				}
			}
			for _, hint := range []string{dir, "moved to", "provision a new identity"} {
				if !strings.Contains(err.Error(), hint) {
					t.Errorf("error %q does not mention %q", err, hint)
				}
			}

			// The agent provisions afresh: that clears the report from Load,
			// and the next start neither complains nor touches what was set aside.
			id2 := writeIdentity(t, s, "B")
			if err := s.Commit(&Manifest{Current: &id2}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Load(); err != nil {
				t.Errorf("Load after a new commit: %v", err)
			}
			s.Close()
			s2 := openStore(t, dir, testOptions(t))
			if r := s2.Report(); r.Corrupt != nil || len(r.Removed) != 0 {
				t.Errorf("second start: %+v, want a clean report", r)
			}
			if _, err := os.Stat(wantAside); err != nil {
				t.Errorf("the set-aside manifest is gone: %v", err)
			}
			if got := findAll(t, dir, keyBytes("A")); got != 1 {
				t.Errorf("the old key is in %d files, want 1", got)
			}
		})
	}
}

// validV1 is a format 1 manifest naming id, with extra (if any) overriding fields.
func validV1(id Identity, extra string) string {
	if extra != "" {
		extra += ", "
	}
	return `{"format_version": 1, "current": {` + extra + `"key_file": "` + id.KeyFile + `", "chain_file": "` + id.ChainFile +
		`", "key_algorithm": "ecdsa-p256", "key_storage": "tpm", "registration_id": "r", "device_id": "d",
		 "assigned_hub": "h.azure-devices.net", "path": "dps"}}`
}

func TestSecondCorruptionInTheSameSecondKeepsBoth(t *testing.T) {
	dir, _ := committedDir(t)
	for _, content := range []string{"first", "second"} {
		writeRaw(t, dir, manifestName, []byte(content))
		openStore(t, dir, testOptions(t)).Close()
	}
	for name, want := range map[string]string{
		"state.json.corrupt-20250102T030405Z": "first", "state.json.corrupt-20250102T030405Z-2": "second",
	} {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
}

// TestUnusableNextIsDropped: a broken staged identity costs only itself.
func TestUnusableNextIsDropped(t *testing.T) {
	dir := stateDir(t)
	s := openStore(t, dir, testOptions(t))
	a := writeIdentity(t, s, "A")
	if err := s.Commit(&Manifest{Current: &a}); err != nil {
		t.Fatal(err)
	}
	b := writeIdentity(t, s, "B")
	if err := s.StageNext(b); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Remove(filepath.Join(dir, b.ChainFile)); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, testOptions(t))
	r := s.Report()
	if r.Corrupt != nil {
		t.Fatalf("the whole state was set aside for a broken next identity: %v", r.Corrupt)
	}
	if r.DroppedNext == nil || !strings.Contains(r.DroppedNext.Error(), "next.chain_file") {
		t.Errorf("Report().DroppedNext = %v, want the missing next.chain_file", r.DroppedNext)
	}
	m, err := s.Load()
	if err != nil || tagOf(m.Current) != "A" || m.Next != nil {
		t.Fatalf("Load = %+v, %v; want A current and nothing staged", m, err)
	}
	checkIdentityFiles(t, s, m.Current)
	checkOnlyNamedFiles(t, s, m, true)
	s.Close()
	if r := openStore(t, dir, testOptions(t)).Report(); r.DroppedNext != nil {
		t.Errorf("the drop was not committed: reported again on the next start")
	}
}

func TestNewerFormatIsRefused(t *testing.T) {
	dir, id := committedDir(t)
	newer := []byte(`{"format_version": 2, "identities": [], "whatever": true}`)
	writeRaw(t, dir, manifestName, newer)
	writeRaw(t, dir, "key-from-the-future.blob", []byte("v2 key"))
	before := listDir(t, dir)

	_, err := Open(dir, testOptions(t))
	var fe *FormatError
	if !errors.As(err, &fe) || !errors.Is(err, ErrNewerFormat) {
		t.Fatalf("Open: %v, want a *FormatError", err)
	}
	want := "state in " + dir + " was written by a newer dpsagent (format 2, this build reads up to 1): " +
		"upgrade dpsagent or run `dpsagent reset`"
	if err.Error() != want {
		t.Errorf("Open: %q\nwant %q", err, want)
	}
	// Nothing may be touched: the newer build may still want all of it.
	if after := listDir(t, dir); !slices.Equal(after, before) {
		t.Errorf("a refused Open changed the directory: %q -> %q", before, after)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, manifestName)); !bytes.Equal(got, newer) {
		t.Errorf("a refused Open changed state.json")
	}

	// The refusal released the lock, and `dpsagent reset` can start over.
	opts := testOptions(t)
	opts.SetAsideNewerFormat = true
	s := openStore(t, dir, opts)
	if _, err := s.Load(); !errors.Is(err, ErrNewerFormat) {
		t.Errorf("Load after setting a newer format aside: %v, want it to say so", err)
	}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "state.json.newer-20250102T030405Z")); !bytes.Equal(got, newer) {
		t.Errorf("the newer manifest was not kept as state.json.newer-<ts>")
	}
	if got := findAll(t, dir, keyBytes("A")); got != 1 {
		t.Errorf("key %s is in %d files after reset, want 1 (quarantined)", id.KeyFile, got)
	}
}

// TestMigrateFormat0 opens a manifest as the first agent wrote it.
func TestMigrateFormat0(t *testing.T) {
	dir := stateDir(t)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeRaw(t, dir, "tpm-key.blob", keyBytes("v0"))
	writeRaw(t, dir, "chain.pem", chainBytes("v0"))
	writeRaw(t, dir, manifestName, []byte(`{
  "id_scope": "0ne00000001",
  "identity": {
    "key_file": "tpm-key.blob",
    "chain_file": "chain.pem",
    "key_algorithm": "ecdsa-p256",
    "registration_id": "gateway-001",
    "device_id": "gateway-001",
    "assigned_hub": "hub1.azure-devices.net",
    "provisioned_at": "2024-06-01T10:00:00+02:00"
  }
}`))

	s := openStore(t, dir, testOptions(t))
	if r := s.Report(); !r.Migrated || r.MigratedFrom != 0 {
		t.Errorf("Report() = %+v, want migrated from format 0", r)
	}
	m, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{
		KeyFile: "tpm-key.blob", ChainFile: "chain.pem", KeyAlgorithm: ECDSAP256, KeyStorage: StorageTPM,
		RegistrationID: "gateway-001", DeviceID: "gateway-001", AssignedHub: "hub1.azure-devices.net",
		ProvisionedAt: fixedUTC("2024-06-01T08:00:00Z"), Path: PathDPS,
	}
	if m.Current == nil || *m.Current != want || m.IDScope != "0ne00000001" {
		t.Fatalf("migrated manifest = %+v (current %+v), want current %+v", m, m.Current, want)
	}
	want.Serial = "v0" // checkIdentityFiles finds the contents by tag
	checkIdentityFiles(t, s, &want)

	data, _ := os.ReadFile(filepath.Join(dir, manifestName))
	if !bytes.Contains(data, []byte(`"format_version": 1`)) || bytes.Contains(data, []byte(`"identity"`)) {
		t.Errorf("state.json was not rewritten in format 1:\n%s", data)
	}
	s.Close()
	if r := openStore(t, dir, testOptions(t)).Report(); r.Migrated {
		t.Errorf("migrated again on the next start (from %d)", r.MigratedFrom)
	}
}

func TestOpenRefusesDirectoryOfAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the directory away")
	}
	dir := mkdirMode(t, 0o700)
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, testOptions(t))
	var de *DirError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "uid 65534") || !strings.Contains(err.Error(), "sudo -u") {
		t.Errorf("Open: %v, want a refusal naming the owner and how to run as it", err)
	}
}
