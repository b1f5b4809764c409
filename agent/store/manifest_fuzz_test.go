package store

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzDecodeManifest: no input makes the parser panic, and whatever it
// accepts is written back so that it reads the same, byte for byte stable.
func FuzzDecodeManifest(f *testing.F) {
	id := testIdentity("A", "key-0123456789abcdef.blob", "chain-0123456789abcdef.pem")
	seed, err := encodeManifest(&Manifest{
		IDScope: "0ne00000001", Current: &id,
		LastRegistration: &Registration{At: fixedNow, OperationID: "op", Status: "assigned"},
		LastError:        &Failure{At: fixedNow, Message: "m", Hint: "h", Code: "429"},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(validV1(id, `"not_after": "9999-12-31T23:00:00-05:00"`)))
	f.Add([]byte(`{"id_scope": "x", "identity": {"key_file": "k", "chain_file": "c", "key_algorithm": "rsa-2048",
		"registration_id": "r", "device_id": "d", "assigned_hub": "h", "provisioned_at": "2024-06-01T10:00:00+02:00"}}`))
	f.Add([]byte(`{"format_version": 2}`))
	f.Add([]byte(`{"format_version": 1, "current": null, "next": {"key_file": "k"}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"format_version": 1e0}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		m, _, err := decodeManifest(data)
		if err != nil {
			return
		}
		m, _, err = settle(m, func(*Manifest) error { return nil })
		if err != nil {
			return
		}
		out, err := encodeManifest(m)
		if err != nil {
			t.Fatalf("an accepted manifest does not encode: %v\ninput: %q", err, data)
		}
		back, version, err := decodeManifest(out)
		if err != nil || version != FormatVersion {
			t.Fatalf("re-reading what was written: version %d, %v\nwritten: %s", version, err, out)
		}
		if !reflect.DeepEqual(back, m) {
			t.Fatalf("round trip changed the manifest:\n got %+v\nwant %+v", back, m)
		}
		again, err := encodeManifest(back)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("encoding is not stable: %v\n%s\n%s", err, out, again)
		}
	})
}
