package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// FormatVersion is the manifest format this build writes and the newest it
// reads. Any change to the JSON shape increments it and adds a migration, so
// an older build never silently drops a field it does not know.
const FormatVersion = 1

// maxManifestSize bounds what is read: a manifest is a few hundred bytes, and
// anything much bigger is corruption, not state.
const maxManifestSize = 1 << 20

// The wire types are the on-disk format, kept apart from the Go API so the API
// can use plain strings and times while the file uses null for "unknown".
type wireManifest struct {
	FormatVersion    int               `json:"format_version"`
	IDScope          *string           `json:"id_scope"`
	Current          *wireIdentity     `json:"current"`
	Next             *wireIdentity     `json:"next"`
	LastRegistration *wireRegistration `json:"last_registration"`
	LastError        *wireFailure      `json:"last_error"`
}

type wireIdentity struct {
	KeyFile        *string `json:"key_file"`
	ChainFile      *string `json:"chain_file"`
	KeyAlgorithm   *string `json:"key_algorithm"`
	KeyStorage     *string `json:"key_storage"`
	RegistrationID *string `json:"registration_id"`
	DeviceID       *string `json:"device_id"`
	AssignedHub    *string `json:"assigned_hub"`
	ProvisionedAt  *string `json:"provisioned_at"`
	Path           *string `json:"path"`
	Serial         *string `json:"serial"`
	NotBefore      *string `json:"not_before"`
	NotAfter       *string `json:"not_after"`
}

type wireRegistration struct {
	At          *string `json:"at"`
	OperationID *string `json:"operation_id"`
	Status      *string `json:"status"`
	Substatus   *string `json:"substatus"`
}

type wireFailure struct {
	At      *string `json:"at"`
	Message *string `json:"message"`
	Hint    *string `json:"hint"`
	Code    *string `json:"code"`
}

// encodeManifest renders m in the current format, indented so an operator can
// read it with cat.
func encodeManifest(m *Manifest) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	w := wireManifest{
		FormatVersion: FormatVersion,
		IDScope:       nullString(m.IDScope),
		Current:       toWireIdentity(m.Current),
		Next:          toWireIdentity(m.Next),
	}
	if r := m.LastRegistration; r != nil {
		w.LastRegistration = &wireRegistration{
			At: nullTime(r.At), OperationID: nullString(r.OperationID),
			Status: nullString(r.Status), Substatus: nullString(r.Substatus),
		}
	}
	if f := m.LastError; f != nil {
		w.LastError = &wireFailure{
			At: nullTime(f.At), Message: nullString(f.Message), Hint: nullString(f.Hint), Code: nullString(f.Code),
		}
	}
	b, err := json.MarshalIndent(&w, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func toWireIdentity(id *Identity) *wireIdentity {
	if id == nil {
		return nil
	}
	return &wireIdentity{
		KeyFile:        nullString(id.KeyFile),
		ChainFile:      nullString(id.ChainFile),
		KeyAlgorithm:   nullString(string(id.KeyAlgorithm)),
		KeyStorage:     nullString(string(id.KeyStorage)),
		RegistrationID: nullString(id.RegistrationID),
		DeviceID:       nullString(id.DeviceID),
		AssignedHub:    nullString(id.AssignedHub),
		ProvisionedAt:  nullTime(id.ProvisionedAt),
		Path:           nullString(string(id.Path)),
		Serial:         nullString(id.Serial),
		NotBefore:      nullTime(id.NotBefore),
		NotAfter:       nullTime(id.NotAfter),
	}
}

// decodeManifest parses a manifest of any supported format, migrating older
// ones, and checks everything that needs no file system. It returns the
// format version found, so the caller knows whether to write the migrated
// manifest back. Unknown keys are ignored: every format change bumps
// FormatVersion, so they can only come from a hand edit, and refusing them
// would cost a working identity.
func decodeManifest(data []byte) (m *Manifest, version int, err error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, 0, fmt.Errorf("not a JSON object: %w", err)
	}
	if fields == nil {
		return nil, 0, errors.New("not a JSON object: null")
	}
	raw, ok := fields["format_version"]
	switch {
	case !ok:
		version = 0 // format 0 predates the field
	default:
		if err := json.Unmarshal(raw, &version); err != nil || bytes.Equal(raw, []byte("null")) {
			return nil, 0, fmt.Errorf("format_version %.40s is not an integer", raw)
		}
		if version < 1 {
			return nil, version, fmt.Errorf("format_version %d is not a valid format", version)
		}
		if version > FormatVersion {
			return nil, version, &FormatError{Found: version, Supported: FormatVersion}
		}
	}
	switch version {
	case 0:
		m, err = decodeV0(data)
	default:
		m, err = decodeV1(data)
	}
	if err != nil {
		return nil, version, err
	}
	return m, version, nil
}

func decodeV1(data []byte) (*Manifest, error) {
	var w wireManifest
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fieldError(err)
	}
	m := &Manifest{IDScope: str(w.IDScope)}
	var err error
	if m.Current, err = fromWireIdentity(w.Current); err != nil {
		return nil, fmt.Errorf("current.%w", err)
	}
	if m.Next, err = fromWireIdentity(w.Next); err != nil {
		return nil, fmt.Errorf("next.%w", err)
	}
	if r := w.LastRegistration; r != nil {
		at, err := parseTime("last_registration.at", r.At)
		if err != nil {
			return nil, err
		}
		m.LastRegistration = &Registration{At: at, OperationID: str(r.OperationID), Status: str(r.Status), Substatus: str(r.Substatus)}
	}
	if f := w.LastError; f != nil {
		at, err := parseTime("last_error.at", f.At)
		if err != nil {
			return nil, err
		}
		m.LastError = &Failure{At: at, Message: str(f.Message), Hint: str(f.Hint), Code: str(f.Code)}
	}
	return m, nil
}

func fromWireIdentity(w *wireIdentity) (*Identity, error) {
	if w == nil {
		return nil, nil
	}
	id := &Identity{
		KeyFile:        str(w.KeyFile),
		ChainFile:      str(w.ChainFile),
		KeyAlgorithm:   KeyAlgorithm(str(w.KeyAlgorithm)),
		KeyStorage:     KeyStorage(str(w.KeyStorage)),
		RegistrationID: str(w.RegistrationID),
		DeviceID:       str(w.DeviceID),
		AssignedHub:    str(w.AssignedHub),
		Path:           Path(str(w.Path)),
		Serial:         str(w.Serial),
	}
	var err error
	for _, t := range []struct {
		field string
		in    *string
		out   *time.Time
	}{
		{"provisioned_at", w.ProvisionedAt, &id.ProvisionedAt},
		{"not_before", w.NotBefore, &id.NotBefore},
		{"not_after", w.NotAfter, &id.NotAfter},
	} {
		if *t.out, err = parseTime(t.field, t.in); err != nil {
			return nil, err
		}
	}
	return id, nil
}

// fieldError names the offending key of a type mismatch, which is what an
// operator looking at the file needs.
func fieldError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("%s: %s where %s was expected", te.Field, te.Value, te.Type)
	}
	return err
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func nullTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339Nano)
	return &s
}

// parseTime accepts any RFC 3339 offset (a hand edit may use one) and
// normalises to UTC, which is what the store writes.
func parseTime(field string, p *string) (time.Time, error) {
	if p == nil {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, *p)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q is not an RFC 3339 time", field, *p)
	}
	t = t.UTC()
	if err := checkTime(field, t); err != nil {
		return time.Time{}, err
	}
	return t, nil
}
