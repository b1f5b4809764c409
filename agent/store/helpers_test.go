package store

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// fixedNow is the clock of every test store, so set-aside names are known.
var fixedNow = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func testOptions(t testing.TB) Options {
	return Options{Logger: zaptest.NewLogger(t), Now: func() time.Time { return fixedNow }}
}

// openStore opens dir and closes it when the test ends.
func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// stateDir returns a state directory path that does not exist yet.
func stateDir(t testing.TB) string { return filepath.Join(t.TempDir(), "state") }

// keyBytes and chainBytes are the contents of identity tag's files. The key
// holds bytes a text-minded writer would mangle.
func keyBytes(tag string) []byte {
	return append([]byte("key "+tag+"\x00\xff\r\n"), bytes.Repeat([]byte{0, 1, 2, 0xfe}, 64)...)
}
func chainBytes(tag string) []byte {
	return []byte("-----BEGIN CERTIFICATE-----\n" + tag + "\n-----END CERTIFICATE-----\n")
}

// writeIdentity writes identity tag's files and returns the record naming
// them. The tag is kept in Serial, so a test can tell identities apart.
func writeIdentity(t testing.TB, s *Store, tag string) Identity {
	t.Helper()
	key, err := s.WriteBlob("key-*.blob", keyBytes(tag))
	if err != nil {
		t.Fatalf("WriteBlob key %s: %v", tag, err)
	}
	chain, err := s.WriteBlob("chain-*.pem", chainBytes(tag))
	if err != nil {
		t.Fatalf("WriteBlob chain %s: %v", tag, err)
	}
	return testIdentity(tag, key, chain)
}

func testIdentity(tag, key, chain string) Identity {
	return Identity{
		KeyFile:        key,
		ChainFile:      chain,
		KeyAlgorithm:   ECDSAP384,
		KeyStorage:     StorageTPM,
		RegistrationID: "gateway-001",
		DeviceID:       "gateway-001",
		AssignedHub:    "hub-" + tag + ".azure-devices.net",
		ProvisionedAt:  time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC),
		Path:           PathDPS,
		Serial:         tag,
		NotBefore:      time.Date(2025, 1, 1, 11, 55, 0, 0, time.UTC),
		NotAfter:       time.Date(2025, 3, 1, 11, 55, 0, 0, time.UTC),
	}
}

// tagOf returns the identity's tag, "" for none.
func tagOf(id *Identity) string {
	if id == nil {
		return ""
	}
	return id.Serial
}

// checkIdentityFiles asserts id's files hold exactly what identity tag wrote,
// with mode 0600.
func checkIdentityFiles(t testing.TB, s *Store, id *Identity) {
	t.Helper()
	for _, f := range []struct {
		name string
		want []byte
	}{{id.KeyFile, keyBytes(id.Serial)}, {id.ChainFile, chainBytes(id.Serial)}} {
		got, err := s.ReadFile(f.name)
		if err != nil {
			t.Fatalf("identity %s: %v", id.Serial, err)
		}
		if !bytes.Equal(got, f.want) {
			t.Fatalf("identity %s: %s holds %q, want %q", id.Serial, f.name, got, f.want)
		}
		checkMode(t, filepath.Join(s.Dir(), f.name), 0o600)
	}
}

func checkMode(t testing.TB, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %04o, want %04o", path, got, want)
	}
}

// listDir returns the sorted names at the top of dir.
func listDir(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// checkOnlyNamedFiles asserts the directory holds the manifest, the lock and
// the files m names, and nothing else.
func checkOnlyNamedFiles(t testing.TB, s *Store, m *Manifest, manifestExists bool) {
	t.Helper()
	want := append([]string{lockName}, m.files()...)
	if manifestExists {
		want = append(want, manifestName)
	}
	slices.Sort(want)
	if got := listDir(t, s.Dir()); !slices.Equal(got, want) {
		t.Errorf("directory holds %q, want %q", got, want)
	}
}

// writeRaw writes a file into dir the way an old agent, an editor or a
// disk fault would, bypassing the store.
func writeRaw(t testing.TB, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func fixedUTC(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}
