package store

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzPeek feeds Peek, which `dpsagent status` and `dpsagent check` use to
// read the state beside a running daemon, what a damaged or hand-edited
// state.json could hold, and holds it to what the daemon itself does with the
// same file: Store.Open on a copy of the directory, with every file the
// manifest names present. Peek must never panic and never return a manifest
// with an error; it refuses exactly the files Open would set aside or refuse
// (a newer format as ErrNewerFormat), with an error naming the directory; and
// otherwise it returns the manifest Open goes on with, so status shows the
// identity the daemon uses.
//
//	go test -run '^$' -fuzz FuzzPeek -fuzztime 60s ./agent/store/
func FuzzPeek(f *testing.F) {
	id := testIdentity("A", "key-0123456789abcdef.blob", "chain-0123456789abcdef.pem")
	next := testIdentity("B", "key-fedcba9876543210.blob", "chain-fedcba9876543210.pem")
	for _, m := range []*Manifest{
		{},
		{IDScope: "0ne00000001", Current: &id,
			LastRegistration: &Registration{At: fixedNow, OperationID: "op", Status: "assigned"},
			LastError:        &Failure{At: fixedNow, Message: "m", Hint: "h", Code: "429"}},
		{IDScope: "0ne00000001", Current: &id, Next: &next},
		{Current: &Identity{KeyStorage: StorageSAS, RegistrationID: "r", DeviceID: "d", AssignedHub: "h", Path: PathDPS}},
	} {
		seed, err := encodeManifest(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(seed)
	}
	f.Add([]byte(validV1(id, `"not_after": "9999-12-31T23:00:00-05:00"`)))
	f.Add([]byte(`{"id_scope": "x", "identity": {"key_file": "k", "chain_file": "c", "key_algorithm": "rsa-2048",
		"registration_id": "r", "device_id": "d", "assigned_hub": "h", "provisioned_at": "2024-06-01T10:00:00+02:00"}}`))
	f.Add([]byte(`{"format_version": 2}`))
	f.Add([]byte(`{"format_version": 99}`))
	f.Add([]byte(`{"format_version": 1, "current": null, "next": {"key_file": "k"}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{not json`))
	f.Add([]byte(`{"format_version": 1e0}`))

	root := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		// Two copies of a directory with this manifest and the files it
		// names: one for Peek, one for the daemon's view (Open).
		stateDir := func(prefix string) string {
			dir, err := os.MkdirTemp(root, prefix)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			if err := os.WriteFile(filepath.Join(dir, manifestName), data, 0o600); err != nil {
				t.Fatal(err)
			}
			if m, _, err := decodeManifest(data); err == nil {
				for _, name := range m.files() {
					if checkBlobName(name) == nil {
						if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			return dir
		}
		peekDir := stateDir("peek-")
		pm, perr := Peek(peekDir)
		if (pm == nil) == (perr == nil) {
			t.Fatalf("Peek = %+v, %v: want exactly one", pm, perr)
		}
		if perr != nil && !strings.Contains(perr.Error(), peekDir) {
			t.Fatalf("Peek's error does not name the directory: %v", perr)
		}
		dir := stateDir("state-")
		s, oerr := Open(dir, Options{Now: func() time.Time { return fixedNow }})
		if oerr != nil {
			if perr == nil {
				t.Fatalf("Open refuses the state (%v), Peek reads it as %+v", oerr, pm)
			}
			if errors.Is(oerr, ErrNewerFormat) != errors.Is(perr, ErrNewerFormat) {
				t.Fatalf("Open says %v, Peek says %v", oerr, perr)
			}
			return
		}
		defer s.Close()
		if c := s.Report().Corrupt; c != nil {
			if perr == nil {
				t.Fatalf("Open sets the state aside (%v), Peek reads it as %+v", c, pm)
			}
			return
		}
		if perr != nil {
			t.Fatalf("Open goes on with the state (dropped next: %v), Peek refuses it: %v", s.Report().DroppedNext, perr)
		}
		om, err := s.Load()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(pm, om) {
			t.Fatalf("Peek reads\n%+v\nthe daemon goes on with\n%+v", pm, om)
		}
	})
}
