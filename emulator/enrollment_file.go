package emulator

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// EnrollmentsDir holds, under the data directory, the enrollments changed
// through the admin API, a file per enrollment (enrollmentFileName): each one
// created or patched, and a tombstone for each deleted one that the
// configuration file defines, so that DPS answers after a restart as it did
// before, as Azure DPS keeps its enrollments. An enrollment only the
// configuration file defines, and never changed through the admin API, has
// no file here; enrollment_store.go says which wins when both define one.
const EnrollmentsDir = "enrollments"

// enrollmentFormatVersion is each file's format_version. A file of another
// version is refused, never guessed at.
const enrollmentFormatVersion = 1

// enrollmentRecord is one enrollment's file.
type enrollmentRecord struct {
	FormatVersion int `json:"format_version"`
	// Enrollment is its key: "registration:<lower-case ID>" or "group:<ID>".
	Enrollment string `json:"enrollment"`
	Deleted    bool   `json:"deleted"`
	// Definition is the enrollment as the admin API left it; null when
	// deleted.
	Definition *Enrollment `json:"definition"`
	// ConfigSHA256 digests (configDigest) the configuration file's definition
	// of the same enrollment when the change was made, "" when it had none:
	// a configuration file edited since then wins over the change.
	ConfigSHA256 string `json:"config_sha256"`
}

// encodeEnrollmentRecord renders the file of the enrollment stored under
// key: def as the admin API left it, or nil for a deletion.
func encodeEnrollmentRecord(key string, def *Enrollment, configSHA256 string) ([]byte, error) {
	r := enrollmentRecord{
		FormatVersion: enrollmentFormatVersion, Enrollment: key,
		Deleted: def == nil, Definition: def, ConfigSHA256: configSHA256,
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode enrollment %s: %w", key, err)
	}
	return append(b, '\n'), nil
}

// decodeEnrollmentRecord reads an enrollment's file strictly: unknown
// fields, a second JSON value, another format_version, and a definition the
// admin API would refuse are errors. Hub names are not checked here: the
// configuration may have dropped a hub since, which the loader reports.
func decodeEnrollmentRecord(data []byte) (enrollmentRecord, error) {
	// The version first, leniently: a newer file's new fields must not hide
	// the one error that explains them.
	var head struct {
		FormatVersion *int `json:"format_version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return enrollmentRecord{}, fmt.Errorf("not an enrollment file: %w", err)
	}
	switch {
	case head.FormatVersion == nil:
		return enrollmentRecord{}, errors.New("no format_version: not an enrollment file")
	case *head.FormatVersion != enrollmentFormatVersion:
		return enrollmentRecord{}, fmt.Errorf("format_version %d: this iotemu reads %d (was the file written by another version of iotemu?)", *head.FormatVersion, enrollmentFormatVersion)
	}
	var r enrollmentRecord
	if err := strictJSON(data, &r); err != nil {
		return enrollmentRecord{}, err
	}
	if err := r.check(); err != nil {
		return enrollmentRecord{}, err
	}
	return r, nil
}

func (r *enrollmentRecord) check() error {
	switch {
	case !validEnrollmentKey(r.Enrollment):
		return fmt.Errorf("enrollment %q: want registration:ID (the ID in lower case) or group:ID", r.Enrollment)
	case r.ConfigSHA256 != "" && !isSHA256Hex(r.ConfigSHA256):
		return fmt.Errorf("config_sha256 %q: want 64 lower-case hex digits, or \"\"", r.ConfigSHA256)
	case r.Deleted && r.Definition != nil:
		return fmt.Errorf("enrollment %s: deleted, yet it has a definition", r.Enrollment)
	case r.Deleted && r.ConfigSHA256 == "":
		// Deleting what only the admin API made removes its file instead.
		return fmt.Errorf("enrollment %s: deleted, but no configuration file definition it deleted", r.Enrollment)
	case !r.Deleted && r.Definition == nil:
		return fmt.Errorf("enrollment %s: no definition, and not deleted", r.Enrollment)
	case r.Deleted:
		return nil
	case r.Definition.Key() != r.Enrollment:
		return fmt.Errorf("enrollment %s: the definition is of %s", r.Enrollment, r.Definition.Key())
	}
	hubs := map[string]bool{}
	for _, h := range r.Definition.Hubs {
		hubs[h] = true
	}
	if err := r.Definition.Validate(hubs); err != nil {
		return fmt.Errorf("enrollment %s: %w", r.Enrollment, err)
	}
	return nil
}

// validEnrollmentKey reports whether key is one Enrollment.Key can return.
func validEnrollmentKey(key string) bool {
	if id, ok := strings.CutPrefix(key, "registration:"); ok {
		return ValidRegistrationID(id) && id == strings.ToLower(id)
	}
	id, ok := strings.CutPrefix(key, "group:")
	return ok && id != ""
}

func isSHA256Hex(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size && s == strings.ToLower(s)
}

// configDigest identifies a configuration file's definition of an
// enrollment, defaults filled in, so that a later start can tell whether the
// file still says what it said when the admin API changed the enrollment.
func configDigest(e Enrollment) string {
	b, _ := json.Marshal(e) // an Enrollment always encodes
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// enrollmentFileName is the file of the enrollment stored under key, named
// as the device registry names its files: "registration.gw-1.json",
// "group.fleet.json".
func enrollmentFileName(key string) string {
	return registryFileName(strings.Replace(key, ":", ".", 1))
}
