package sas

import (
	"bytes"
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics and that whatever it accepts
// survives rendering and parsing again unchanged, including the exact text
// that is signed, so a re-rendered token verifies exactly when the original
// does.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"SharedAccessSignature sr=0ne00000001%2Fregistrations%2Fgateway-001&sig=QFQTmJZlRai0ZmCW%2FCh904OlC0B63NsxzymZiDCOLoo%3D&se=1767225600&skn=registration",
		"SharedAccessSignature sr=0ne00000001%2fregistrations%2fgateway-001&sig=IX3S%2Bwa%2BhJfPsakKu9tdpwmHG2RDv2DPqnYtKYjrSow%3D&se=1767225600",
		"SharedAccessSignature SE=007&skn=a%26b&&sig=kIPrMIDu6Wt%2BqQ9MACA8t9u1e3xGtpMA2VyLui35EG4%3D&sr=a+b%2F&x=y",
		"SharedAccessSignature sr=&sig=&se=",
		"SharedAccessSignature ",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, err := Parse(s)
		if err != nil {
			return
		}
		second, err := Parse(first.String())
		if err != nil {
			t.Fatalf("Parse(%q) accepted, but its rendering %q is refused: %v", s, first.String(), err)
		}
		if first.resource != second.resource || first.encodedResource != second.encodedResource ||
			!bytes.Equal(first.signature, second.signature) || !first.expiry.Equal(second.expiry) ||
			first.signedExpiry != second.signedExpiry || first.keyName != second.keyName {
			t.Fatalf("fields changed on re-parse:\n first %+v\nsecond %+v", first, second)
		}
		// Verify must not panic on anything Parse accepts.
		_ = Verify(first, first.resource, [][]byte{[]byte("k")}, time.Unix(0, 0))
	})
}
