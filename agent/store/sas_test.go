package store

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A legacy sas identity has no files; it commits, reloads, and its invalid
// forms are refused.
func TestSASIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s := openStore(t, dir, Options{})
	id := Identity{KeyStorage: StorageSAS, RegistrationID: "gw", DeviceID: "gw", AssignedHub: "hub.example", Path: PathDPS, ProvisionedAt: time.Now().UTC()}
	if err := s.Commit(&Manifest{Current: &id}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir, Options{})
	m, err := s.Load()
	if err != nil || m.Current == nil || m.Current.KeyStorage != StorageSAS || m.Current.DeviceID != "gw" {
		t.Fatalf("reloaded %+v, %v", m.Current, err)
	}
	if r := s.Report(); len(r.Removed) != 0 || r.Corrupt != nil {
		t.Errorf("open report %+v", r)
	}
	bad := id
	bad.KeyFile = "key-0123456789abcdef.blob"
	if err := s.Commit(&Manifest{Current: &bad}); err == nil || !strings.Contains(err.Error(), "sas identity has no key_file") {
		t.Fatalf("a sas identity with a key file: err = %v", err)
	}
	bad = id
	bad.AssignedHub = ""
	if err := s.Commit(&Manifest{Current: &bad}); err == nil || !strings.Contains(err.Error(), "assigned_hub is empty") {
		t.Fatalf("a sas identity without a hub: err = %v", err)
	}
}
