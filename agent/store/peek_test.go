package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Peek sees what the running store committed, without the lock and without
// changing anything in the directory.
func TestPeekBesideARunningStore(t *testing.T) {
	dir := stateDir(t)
	s := openStore(t, dir, testOptions(t))
	if m, err := Peek(dir); err != nil || m.Current != nil {
		t.Fatalf("Peek of a fresh directory = %+v, %v", m, err)
	}
	if err := s.Update(func(m *Manifest) error { m.IDScope = "0ne00000001"; return nil }); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(dir, "key-0000000000000000.blob")
	if err := os.WriteFile(stray, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := Peek(dir)
	if err != nil || m.IDScope != "0ne00000001" {
		t.Fatalf("Peek = %+v, %v", m, err)
	}
	if _, err := os.Stat(stray); err != nil {
		t.Error("Peek removed a file: it must change nothing")
	}
}

func TestPeekReportsProblems(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, manifestName), []byte(`{"format_version": 99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Peek(dir); !errors.Is(err, ErrNewerFormat) {
		t.Errorf("a newer format: err = %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, manifestName), []byte(`{not json`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Peek(dir); err == nil || !strings.Contains(err.Error(), "provision afresh") {
		t.Errorf("a corrupt manifest: err = %v", err)
	}
	if _, err := Peek(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing directory is not an empty state")
	}
}

// Peek judges as Open does: a manifest over the size limit, or one that names
// files that are not there, is what the daemon would set aside.
func TestPeekJudgesAsOpenDoes(t *testing.T) {
	dir := t.TempDir()
	write := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, manifestName), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(append([]byte(`{"format_version": 1, "id_scope": "`), append([]byte(strings.Repeat("x", maxManifestSize)), `"}`...)...))
	if _, err := Peek(dir); err == nil || !strings.Contains(err.Error(), "larger than") || !strings.Contains(err.Error(), "set it aside") {
		t.Errorf("an oversized manifest: err = %v", err)
	}

	id := testIdentity("A", "key-0123456789abcdef.blob", "chain-0123456789abcdef.pem")
	data, err := encodeManifest(&Manifest{IDScope: "0ne00000001", Current: &id})
	if err != nil {
		t.Fatal(err)
	}
	write(data)
	if _, err := Peek(dir); err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "set it aside") {
		t.Errorf("a manifest naming missing files: err = %v", err)
	}
	for _, name := range []string{id.KeyFile, id.ChainFile} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if m, err := Peek(dir); err != nil || m.Current == nil || m.Current.KeyFile != id.KeyFile {
		t.Errorf("with the files there: %+v, %v", m, err)
	}
}
