package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// DecodeKey turns the text of a symmetric key, as Azure shows it and as it
// sits in a key file, into the key bytes that sign tokens. Surrounding
// whitespace is ignored because editors and `echo` add a trailing newline.
//
// Errors never contain the text itself: it is a secret.
func DecodeKey(text string) ([]byte, error) {
	s := strings.TrimSpace(text)
	if s == "" {
		return nil, errors.New("decode symmetric key: the key is empty; put the base64 key (as shown in the Azure portal) in the file")
	}
	// Two common mistakes get a precise hint, since "illegal base64 data"
	// alone does not tell a user what the file should have held.
	if strings.Contains(s, "SharedAccessKey=") {
		return nil, errors.New("decode symmetric key: this is a connection string, not a key; keep only the value after SharedAccessKey=")
	}
	if strings.HasPrefix(s, "-----BEGIN") {
		return nil, errors.New("decode symmetric key: this is a PEM file, not a symmetric key; for certificate onboarding use onboarding.method: x509")
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decode symmetric key: not standard base64 (%w); the file must hold only the key, as shown in the Azure portal", err)
	}
	return key, nil
}

// EncodeKey is the inverse of DecodeKey: the text form Azure uses, e.g. for
// a derived device key shown to an operator.
func EncodeKey(key []byte) string {
	return base64.StdEncoding.EncodeToString(key)
}

// DeriveDeviceKey returns the device key of registrationID in an
// enrollment group with the (decoded) group key: HMAC-SHA256 keyed with the
// group key over the registration ID. The registration ID is used byte for
// byte; DPS treats IDs case-insensitively, so callers must pass the exact
// spelling the enrollment expects.
func DeriveDeviceKey(groupKey []byte, registrationID string) []byte {
	mac := hmac.New(sha256.New, groupKey)
	mac.Write([]byte(registrationID))
	return mac.Sum(nil)
}
