package sas_test

import (
	"bytes"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// decodeKeyError is every message DecodeKey may give: fixed text, with at
// most the offset base64 reports. Nothing of the key itself.
var decodeKeyError = regexp.MustCompile(`^decode symmetric key: (` +
	`the key is empty; put the base64 key \(as shown in the Azure portal\) in the file` +
	`|this is a connection string, not a key; keep only the value after SharedAccessKey=` +
	`|this is a PEM file, not a symmetric key; for certificate onboarding use onboarding\.method: x509` +
	`|not standard base64 \(illegal base64 data at input byte [0-9]+\); the file must hold only the key, as shown in the Azure portal` +
	`)$`)

// FuzzDecodeKey feeds DecodeKey what onboarding.symmetric_key_file could
// hold. It must never panic; it gives a non-empty key or an error, never both;
// an error is one of its fixed messages, so it never repeats the file's text
// (a secret); and an accepted key is what its text says: the key's canonical
// base64 reads back as the same key, and is the text itself once white space
// is removed, whenever the text was canonical.
//
//	go test -run '^$' -fuzz FuzzDecodeKey -fuzztime 60s ./mqtt/sas/
func FuzzDecodeKey(f *testing.F) {
	for _, s := range []string{
		katDeviceKey, katDeviceKey + "\n", "  " + katDeviceKey + "\r\n", katGroupKey,
		"\n", "", "this is not a key\n", "z2ispnuGRVjPfrEzYVn5eDhc05Fpawyu65iZGAhc25Y_",
		"HostName=h;DeviceId=d;SharedAccessKey=" + katDeviceKey, "-----BEGIN PRIVATE KEY-----\nMIG...\n",
		katGroupKey[:44] + "\n" + katGroupKey[44:], "AB==", "====", "\ufeff" + katDeviceKey,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		key, err := sas.DecodeKey(text)
		if err != nil {
			if key != nil {
				t.Fatalf("DecodeKey returned %d key bytes together with %v", len(key), err)
			}
			if !decodeKeyError.MatchString(err.Error()) {
				t.Fatalf("DecodeKey(%q): unexpected message %q (may it hold the secret?)", text, err)
			}
			return
		}
		if len(key) == 0 {
			t.Fatalf("DecodeKey(%q) accepted an empty key", text)
		}
		enc := sas.EncodeKey(key)
		again, err := sas.DecodeKey(enc)
		if err != nil || !bytes.Equal(again, key) {
			t.Fatalf("the key of %q, written as %q, reads back as %x, %v", text, enc, again, err)
		}
		// base64 skips line breaks inside the text; without them (and the
		// white space DecodeKey trims), canonical text is the key's encoding.
		bare := strings.NewReplacer("\r", "", "\n", "").Replace(strings.TrimSpace(text))
		if _, strictErr := base64.StdEncoding.Strict().DecodeString(bare); strictErr == nil && bare != enc {
			t.Fatalf("DecodeKey(%q) = %q, not what the text says", text, enc)
		}
	})
}
