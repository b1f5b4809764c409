package emulator

import (
	"bytes"
	"strings"
	"testing"
)

// An enrollment file is refused with an error or read into a record the
// store can apply: a key Enrollment.Key can return, with a plain file name,
// a definition of that key the admin API would accept (or a deletion of a
// configured enrollment), and which writes back to a file that reads the
// same.
func FuzzEnrollmentRecord(f *testing.F) {
	ca := newDPSTestCA(f, "fuzz enrollment CA", nil)
	individual := dpsSymmetricEnrollment("Gw-1", testKey)
	individual.defaults()
	individual.Hubs, individual.DeviceID = []string{"hub1", "hub9"}, "gateway"
	group := Enrollment{GroupID: "Fleet", Attestation: Attestation{Type: AttestX509, CAPEM: dpsPEM(ca.cert)}}
	group.defaults()
	digest := configDigest(individual)
	for _, r := range []struct {
		key    string
		def    *Enrollment
		digest string
	}{
		{individual.Key(), &individual, ""},
		{individual.Key(), &individual, digest},
		{individual.Key(), nil, digest},
		{group.Key(), &group, ""},
	} {
		data, err := encodeEnrollmentRecord(r.key, r.def, r.digest)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		``, `{}`, `null`, `[]`,
		`{"format_version":1}`,
		`{"format_version":2}`,
		`{"format_version":1e0}`,
		`{"format_version":1,"enrollment":"group:","deleted":true,"definition":null,"config_sha256":""}`,
		`{"format_version":1,"enrollment":"group:../x","deleted":true,"definition":null,"config_sha256":"` + digest + `"}`,
		`{"format_version":1,"enrollment":"registration:a","deleted":false,"definition":{"registration_id":"A","attestation":{"type":"symmetric_key","primary_key":"` + testKey + `"},"allocation":"static","reprovision":"never"},"config_sha256":""}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeEnrollmentRecord(data)
		if err != nil {
			return
		}
		if !validEnrollmentKey(r.Enrollment) || r.Deleted != (r.Definition == nil) ||
			(r.Definition != nil && r.Definition.Key() != r.Enrollment) || (r.Deleted && r.ConfigSHA256 == "") {
			t.Fatalf("%q read into a record the store cannot apply: %+v", data, r)
		}
		checkRegistryFileName(t, strings.Replace(r.Enrollment, ":", ".", 1))
		written, err := encodeEnrollmentRecord(r.Enrollment, r.Definition, r.ConfigSHA256)
		if err != nil {
			t.Fatalf("%q read, but does not write back: %v", data, err)
		}
		again, err := decodeEnrollmentRecord(written)
		if err != nil {
			t.Fatalf("%q read, but what it writes back does not: %v\n%s", data, err, written)
		}
		if rewritten, _ := encodeEnrollmentRecord(again.Enrollment, again.Definition, again.ConfigSHA256); !bytes.Equal(rewritten, written) {
			t.Fatalf("%q: written back, it reads differently:\n%s\nthen\n%s", data, written, rewritten)
		}
	})
}
