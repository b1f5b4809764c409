package emulator

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// RegistryDir is the hubs' device identity registry under the data
// directory, one file per device (registryFileName): every device DPS has
// assigned, how its hub authenticates it, its revocation state and its twin,
// so that provisioned devices reconnect after a restart as they would to IoT
// Hub, without registering again. One file per device keeps the cost of a
// change (a twin patch, an assignment) independent of the fleet's size.
//
// What is kept is what IoT Hub keeps in its identity registry and twins;
// registry_store.go says what is not, and why.
const RegistryDir = "devices"

// registryFormatVersion is the format_version files are written in. Version
// 1 lacks initial_hub, and is read as a device whose first hub is its
// current one; a file of any other version is refused, never guessed at.
const registryFormatVersion = 2

// registryEntry is one device's file. Keys and certificates are base64 (DER
// for the certificates), as DPS and IoT Hub carry them.
type registryEntry struct {
	FormatVersion  int    `json:"format_version"`
	DeviceID       string `json:"device_id"`
	RegistrationID string `json:"registration_id"`
	Hub            string `json:"hub"`
	Enrollment     string `json:"enrollment"`
	// InitialHub is the hub DPS first assigned the device to (version 2).
	InitialHub string `json:"initial_hub,omitempty"`
	// How the hub authenticates the device (Device's fields of the same names).
	SymmetricKeys  [][]byte `json:"symmetric_keys"`
	Thumbprints    []string `json:"thumbprints"`
	CACertificates [][]byte `json:"ca_certificates"`
	Issued         bool     `json:"issued"`
	Revoked        bool     `json:"revoked"`
	// Certificate is the one last issued to the device or presented by it,
	// as of the file's last write (connecting does not write).
	Certificate *CertificateInfo `json:"certificate"`
	Twin        registryTwin     `json:"twin"`
}

type registryTwin struct {
	Desired         map[string]any `json:"desired"`
	DesiredVersion  int            `json:"desired_version"`
	Reported        map[string]any `json:"reported"`
	ReportedVersion int            `json:"reported_version"`
}

// encodeRegistryEntry renders the file of d: what of it survives a restart.
// The caller holds the State's lock, as the twin's maps are read here.
func encodeRegistryEntry(d *Device) ([]byte, error) {
	e := registryEntry{
		FormatVersion: registryFormatVersion,
		DeviceID:      d.DeviceID, RegistrationID: d.RegistrationID, Hub: d.Hub, Enrollment: d.EnrollmentKey,
		InitialHub:    d.InitialHub,
		SymmetricKeys: d.SymmetricKeys, Thumbprints: d.Thumbprints,
		Issued: d.Issued, Revoked: d.Revoked, Certificate: d.Certificate,
		Twin: registryTwin{
			Desired: d.Twin.Desired, DesiredVersion: d.Twin.DesiredVersion,
			Reported: d.Twin.Reported, ReportedVersion: d.Twin.ReportedVersion,
		},
	}
	for _, c := range d.CAs {
		e.CACertificates = append(e.CACertificates, c.Raw)
	}
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode device %q for the device registry: %w", d.DeviceID, err)
	}
	return append(b, '\n'), nil
}

// decodeRegistryEntry reads a device's file strictly: unknown fields, a
// second JSON value, another format_version and entries the hub could not
// use are errors. Twin numbers stay json.Number, so large integers come back
// exactly.
func decodeRegistryEntry(data []byte) (*Device, error) {
	// The version first, leniently: a newer file's new fields must not hide
	// the one error that explains them.
	var head struct {
		FormatVersion *int `json:"format_version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("not a device registry file: %w", err)
	}
	switch {
	case head.FormatVersion == nil:
		return nil, errors.New("no format_version: not a device registry file")
	case *head.FormatVersion < 1 || *head.FormatVersion > registryFormatVersion:
		return nil, fmt.Errorf("format_version %d: this iotemu reads 1 to %d (was the file written by another version of iotemu?)", *head.FormatVersion, registryFormatVersion)
	}
	var e registryEntry
	if err := strictJSON(data, &e); err != nil {
		return nil, err
	}
	switch {
	case e.DeviceID == "":
		return nil, errors.New("device_id is empty")
	case e.Hub == "":
		return nil, fmt.Errorf("device %q: hub is empty", e.DeviceID)
	case e.FormatVersion == 1 && e.InitialHub != "":
		return nil, fmt.Errorf("device %q: initial_hub is not part of format_version 1", e.DeviceID)
	case e.Twin.DesiredVersion < 1 || e.Twin.ReportedVersion < 1:
		return nil, fmt.Errorf("device %q: twin versions %d (desired) and %d (reported): IoT Hub's start at 1", e.DeviceID, e.Twin.DesiredVersion, e.Twin.ReportedVersion)
	}
	d := &Device{
		DeviceID: e.DeviceID, RegistrationID: e.RegistrationID, Hub: e.Hub, EnrollmentKey: e.Enrollment,
		InitialHub:    e.InitialHub,
		SymmetricKeys: e.SymmetricKeys, Thumbprints: e.Thumbprints,
		Issued: e.Issued, Revoked: e.Revoked, Certificate: e.Certificate,
		Twin: Twin{
			Desired: e.Twin.Desired, DesiredVersion: e.Twin.DesiredVersion,
			Reported: e.Twin.Reported, ReportedVersion: e.Twin.ReportedVersion,
		},
	}
	for i, k := range e.SymmetricKeys {
		if len(k) == 0 {
			return nil, fmt.Errorf("device %q: symmetric_keys[%d] is empty", e.DeviceID, i)
		}
	}
	for i, t := range e.Thumbprints {
		if t == "" {
			return nil, fmt.Errorf("device %q: thumbprints[%d] is empty", e.DeviceID, i)
		}
	}
	for i, der := range e.CACertificates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("device %q: ca_certificates[%d]: %w", e.DeviceID, i, err)
		}
		d.CAs = append(d.CAs, c)
	}
	// null properties are an empty set, as a new twin has.
	if d.Twin.Desired == nil {
		d.Twin.Desired = map[string]any{}
	}
	if d.Twin.Reported == nil {
		d.Twin.Reported = map[string]any{}
	}
	return d, nil
}

// strictJSON decodes exactly one JSON value into v, refusing unknown fields.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON object")
	}
	return nil
}

// registryFileNameMax bounds a name before ".json", leaving room for the
// temporary file's decoration within the 255 bytes a file name may have.
const registryFileNameMax = 200

// registryFileName is the file of the device whose lower-case ID is key:
// the ID itself where it is made of letters, digits, '-', '_' and '.' (not
// first, so no file is hidden or special), each other byte percent-escaped;
// and, when that would be too long, "sha256=" and the ID's hash, a name
// escaping never yields as '=' is always escaped. Distinct keys get distinct
// names.
func registryFileName(key string) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' && i > 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	name := b.String()
	if len(name) > registryFileNameMax {
		sum := sha256.Sum256([]byte(key))
		name = "sha256=" + hex.EncodeToString(sum[:])
	}
	return name + ".json"
}
