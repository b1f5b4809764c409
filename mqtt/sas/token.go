package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// KeyNameRegistration is the skn that DPS documents for device tokens. The
// embedded C SDK leaves skn out and DPS accepts that too; hub device tokens
// carry no skn (only policy tokens do).
const KeyNameRegistration = "registration"

const scheme = "SharedAccessSignature"

// DPSResource is the resource URI a device signs to register with DPS.
func DPSResource(idScope, registrationID string) string {
	return idScope + "/registrations/" + registrationID
}

// HubResource is the resource URI a device signs to connect to IoT Hub.
func HubResource(hubHost, deviceID string) string {
	return hubHost + "/devices/" + deviceID
}

// Token is a parsed shared access signature. It keeps the resource exactly as
// it was encoded in the token, because the service signs that text and SDKs
// differ in the case of their escapes (%2f against %2F); re-encoding it would
// break the signature of one of them. The zero Token is not valid.
type Token struct {
	resource        string
	encodedResource string
	signature       []byte
	expiry          time.Time
	signedExpiry    string
	keyName         string
}

// Resource is the URL-decoded resource URI (sr).
func (t Token) Resource() string { return t.resource }

// Signature is the decoded HMAC-SHA256 (sig). The caller must not modify it.
func (t Token) Signature() []byte { return t.signature }

// Expiry is the moment the token stops being valid (se), before the clock
// skew Verify allows.
func (t Token) Expiry() time.Time { return t.expiry }

// KeyName is the skn field, empty when the token has none.
func (t Token) KeyName() string { return t.keyName }

// String renders the token as a device sends it, fields in the documented
// order: sr, sig, se, then skn when there is one.
func (t Token) String() string {
	var b strings.Builder
	b.WriteString(scheme + " sr=")
	b.WriteString(t.encodedResource)
	b.WriteString("&sig=")
	b.WriteString(url.QueryEscape(base64.StdEncoding.EncodeToString(t.signature)))
	b.WriteString("&se=")
	b.WriteString(t.signedExpiry)
	if t.keyName != "" {
		b.WriteString("&skn=")
		b.WriteString(url.QueryEscape(t.keyName))
	}
	return b.String()
}

// Sign makes the token a device presents as its MQTT password: resourceURI
// is DPSResource or HubResource, key the decoded device key, keyName
// KeyNameRegistration for DPS and "" for the hub. Expiry is truncated to
// whole seconds and must be after 1970.
func Sign(resourceURI string, key []byte, keyName string, expiry time.Time) string {
	t := Token{
		resource:        resourceURI,
		encodedResource: url.QueryEscape(resourceURI),
		expiry:          time.Unix(expiry.Unix(), 0),
		signedExpiry:    strconv.FormatInt(expiry.Unix(), 10),
		keyName:         keyName,
	}
	t.signature = t.sign(key)
	return t.String()
}

// sign computes the HMAC over the string to sign: the resource as encoded in
// the token, a newline, and the expiry.
func (t Token) sign(key []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(t.encodedResource))
	mac.Write([]byte{'\n'})
	mac.Write([]byte(t.signedExpiry))
	return mac.Sum(nil)
}

// Parse reads a token as IoT Hub and DPS do: "SharedAccessSignature " and
// then &-separated name=value fields in any order. Field names are matched
// case-insensitively, empty fields (a stray '&') and unknown fields are
// skipped, and skn is optional. Every failure wraps ErrMalformed.
//
// It is stricter than the service in three places, all of which a real
// device never trips: se must be decimal digits (the service parses a
// floating-point number), sig must be canonical base64 of 32 bytes (the
// service compares strings, so nothing else could match), and a value must
// not hold a raw '=' (the service silently cuts the value there).
func Parse(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, scheme+" ")
	if !ok {
		return Token{}, fmt.Errorf("%w: does not start with %q", ErrMalformed, scheme+" ")
	}
	// The service splits the whole token on white space and wants exactly
	// two parts, so any further space, tab or newline makes it malformed.
	if strings.ContainsFunc(rest, unicode.IsSpace) {
		return Token{}, fmt.Errorf("%w: white space inside the fields", ErrMalformed)
	}
	var (
		t                                Token
		haveSR, haveSig, haveSE, haveSKN bool
	)
	for field := range strings.SplitSeq(rest, "&") {
		if field == "" {
			continue
		}
		name, value, ok := strings.Cut(field, "=")
		if !ok {
			return Token{}, fmt.Errorf("%w: a field has no '='", ErrMalformed)
		}
		if strings.Contains(value, "=") {
			return Token{}, fmt.Errorf("%w: field %q holds an unencoded '='", ErrMalformed, fieldName(name))
		}
		var err error
		switch {
		case strings.EqualFold(name, "sr"):
			err = parseOnce(&haveSR, "sr", func() error { return t.parseResource(value) })
		case strings.EqualFold(name, "sig"):
			err = parseOnce(&haveSig, "sig", func() error { return t.parseSignature(value) })
		case strings.EqualFold(name, "se"):
			err = parseOnce(&haveSE, "se", func() error { return t.parseExpiry(value) })
		case strings.EqualFold(name, "skn"):
			err = parseOnce(&haveSKN, "skn", func() error { return t.parseKeyName(value) })
		}
		if err != nil {
			return Token{}, err
		}
	}
	for _, f := range []struct {
		name string
		have bool
	}{{"sr", haveSR}, {"sig", haveSig}, {"se", haveSE}} {
		if !f.have {
			return Token{}, fmt.Errorf("%w: missing field %s", ErrMalformed, f.name)
		}
	}
	return t, nil
}

// parseOnce runs parse unless the field was already seen: the service
// rejects a token that names a field twice.
func parseOnce(seen *bool, name string, parse func() error) error {
	if *seen {
		return fmt.Errorf("%w: field %s appears twice", ErrMalformed, name)
	}
	*seen = true
	return parse()
}

// fieldName shortens an unknown field name for an error message, so a
// hostile token cannot flood the logs through it.
func fieldName(name string) string {
	const maxLen = 16
	if len(name) > maxLen {
		return name[:maxLen] + "..."
	}
	return name
}

func (t *Token) parseResource(value string) error {
	decoded, err := url.QueryUnescape(value)
	if err != nil {
		return fmt.Errorf("%w: sr is not URL-encoded: %w", ErrMalformed, err)
	}
	if decoded == "" {
		return fmt.Errorf("%w: sr is empty", ErrMalformed)
	}
	t.resource, t.encodedResource = decoded, value
	return nil
}

func (t *Token) parseSignature(value string) error {
	decoded, err := url.QueryUnescape(value)
	if err != nil {
		return fmt.Errorf("%w: sig is not URL-encoded: %w", ErrMalformed, err)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(decoded)
	if err != nil {
		return fmt.Errorf("%w: sig is not base64: %w", ErrMalformed, err)
	}
	// The decoder skips line breaks; the service compares the text, so a
	// signature is only acceptable in its canonical form.
	if base64.StdEncoding.EncodeToString(sig) != decoded {
		return fmt.Errorf("%w: sig is not canonical base64", ErrMalformed)
	}
	if len(sig) != sha256.Size {
		return fmt.Errorf("%w: sig has %d bytes, HMAC-SHA256 gives %d", ErrMalformed, len(sig), sha256.Size)
	}
	t.signature = sig
	return nil
}

func (t *Token) parseExpiry(value string) error {
	// The service URL-decodes se and signs the decoded text.
	decoded, err := url.QueryUnescape(value)
	if err != nil {
		return fmt.Errorf("%w: se is not URL-encoded: %w", ErrMalformed, err)
	}
	if decoded == "" || strings.ContainsFunc(decoded, func(r rune) bool { return r < '0' || r > '9' }) {
		return fmt.Errorf("%w: se is not a number of seconds since 1970", ErrMalformed)
	}
	secs, err := strconv.ParseInt(decoded, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: se is out of range: %w", ErrMalformed, err)
	}
	t.expiry, t.signedExpiry = time.Unix(secs, 0), decoded
	return nil
}

func (t *Token) parseKeyName(value string) error {
	decoded, err := url.QueryUnescape(value)
	if err != nil {
		return fmt.Errorf("%w: skn is not URL-encoded: %w", ErrMalformed, err)
	}
	t.keyName = decoded
	return nil
}
