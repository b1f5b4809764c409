package emulator

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// Enrollment is an individual enrollment (RegistrationID set) or an enrollment
// group (GroupID set), in the YAML file and the admin API alike.
type Enrollment struct {
	RegistrationID    string      `yaml:"registration_id,omitempty" json:"registration_id,omitempty"`
	GroupID           string      `yaml:"group_id,omitempty" json:"group_id,omitempty"`
	Enabled           *bool       `yaml:"enabled,omitempty" json:"enabled"`
	Attestation       Attestation `yaml:"attestation" json:"attestation"`
	IssueCertificates *bool       `yaml:"issue_certificates,omitempty" json:"issue_certificates"`
	Hubs              []string    `yaml:"hubs,omitempty" json:"hubs"`
	// Allocation across Hubs: static (the first), evenly (the least loaded),
	// hashed (by registration ID).
	Allocation string `yaml:"allocation,omitempty" json:"allocation"`
	// Reprovision: migrate (keep the twin), reset (fresh twin), never (stay).
	Reprovision string `yaml:"reprovision,omitempty" json:"reprovision"`
	DeviceID    string `yaml:"device_id,omitempty" json:"device_id,omitempty"`
}

// Attestation is how devices of an enrollment prove who they are.
type Attestation struct {
	Type         string `yaml:"type" json:"type"` // symmetric_key or x509
	PrimaryKey   string `yaml:"primary_key,omitempty" json:"primary_key,omitempty"`
	SecondaryKey string `yaml:"secondary_key,omitempty" json:"secondary_key,omitempty"`
	// CertificateFile (individual) is the device's own certificate, whose
	// thumbprint is registered; CAFile (group) is the CA that signs devices'
	// certificates. The admin API takes the PEM text itself instead.
	CertificateFile string `yaml:"certificate_file,omitempty" json:"certificate_file,omitempty"`
	CAFile          string `yaml:"ca_file,omitempty" json:"ca_file,omitempty"`
	CertificatePEM  string `yaml:"-" json:"certificate_pem,omitempty"`
	CAPEM           string `yaml:"-" json:"ca_pem,omitempty"`
}

// Attestation types.
const (
	AttestSymmetricKey = "symmetric_key"
	AttestX509         = "x509"
)

// Allocation and reprovisioning policies.
const (
	AllocStatic  = "static"
	AllocEvenly  = "evenly"
	AllocHashed  = "hashed"
	ReproMigrate = "migrate"
	ReproReset   = "reset"
	ReproNever   = "never"
)

// registrationIDPattern is DPS's rule: up to 128 of alphanumerics and - . _ :,
// not starting or ending with a special character.
var registrationIDPattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.:-]{0,126}[A-Za-z0-9])?$`)

// ValidRegistrationID reports whether id follows DPS's rules.
func ValidRegistrationID(id string) bool { return registrationIDPattern.MatchString(id) }

// Key identifies the enrollment: "registration:ID" or "group:ID".
func (e *Enrollment) Key() string {
	if e.GroupID != "" {
		return "group:" + e.GroupID
	}
	return "registration:" + strings.ToLower(e.RegistrationID)
}

// IsGroup reports whether this is an enrollment group.
func (e *Enrollment) IsGroup() bool { return e.GroupID != "" }

// IsEnabled is true unless the enrollment says enabled: false.
func (e *Enrollment) IsEnabled() bool { return e.Enabled == nil || *e.Enabled }

// Issues reports whether devices of this enrollment get certificates from CSRs.
func (e *Enrollment) Issues() bool { return e.IssueCertificates == nil || *e.IssueCertificates }

func (e *Enrollment) defaults() {
	if e.Allocation == "" {
		e.Allocation = AllocHashed
	}
	if e.Reprovision == "" {
		e.Reprovision = ReproMigrate
	}
	if e.Enabled == nil {
		e.Enabled = ptr(true)
	}
	if e.IssueCertificates == nil {
		e.IssueCertificates = ptr(true)
	}
}

func ptr[T any](v T) *T { return &v }

// clone is a copy that shares nothing with e, so that decoding a patch into
// it (which writes through pointers and reuses slices) leaves e alone.
func (e *Enrollment) clone() Enrollment {
	c := *e
	c.Hubs = slices.Clone(e.Hubs)
	if e.Enabled != nil {
		c.Enabled = ptr(*e.Enabled)
	}
	if e.IssueCertificates != nil {
		c.IssueCertificates = ptr(*e.IssueCertificates)
	}
	return c
}

// Validate checks the enrollment against the hub names that exist.
func (e *Enrollment) Validate(hubs map[string]bool) error {
	switch {
	case e.RegistrationID != "" && e.GroupID != "":
		return errors.New("give registration_id (individual) or group_id (group), not both")
	case e.RegistrationID == "" && e.GroupID == "":
		return errors.New("registration_id (individual) or group_id (group) is required")
	case e.RegistrationID != "" && !ValidRegistrationID(e.RegistrationID):
		return fmt.Errorf("registration_id %q: use up to 128 letters, digits and - . _ :, not starting or ending with a symbol", e.RegistrationID)
	case e.IsGroup() && e.DeviceID != "":
		return errors.New("device_id applies to individual enrollments only (a group's devices use their registration IDs)")
	}
	if !slices.Contains([]string{AllocStatic, AllocEvenly, AllocHashed}, e.Allocation) {
		return fmt.Errorf("allocation %q: use static, evenly or hashed", e.Allocation)
	}
	if !slices.Contains([]string{ReproMigrate, ReproReset, ReproNever}, e.Reprovision) {
		return fmt.Errorf("reprovision %q: use migrate, reset or never", e.Reprovision)
	}
	for _, h := range e.Hubs {
		if !hubs[h] {
			return fmt.Errorf("hubs: no hub named %q is configured", h)
		}
	}
	switch e.Attestation.Type {
	case AttestSymmetricKey:
		if e.Attestation.PrimaryKey == "" {
			return errors.New("attestation.primary_key is required for symmetric_key (base64, e.g. from openssl rand -base64 32)")
		}
		for _, k := range []string{e.Attestation.PrimaryKey, e.Attestation.SecondaryKey} {
			if k == "" {
				continue
			}
			if _, err := sas.DecodeKey(k); err != nil {
				return fmt.Errorf("attestation: %w", err)
			}
		}
	case AttestX509:
		if _, err := e.certificates(); err != nil {
			return fmt.Errorf("attestation: %w", err)
		}
	default:
		return fmt.Errorf("attestation.type %q: use symmetric_key or x509", e.Attestation.Type)
	}
	return nil
}

// symmetricKeys returns the decoded primary and secondary keys.
func (e *Enrollment) symmetricKeys() [][]byte {
	var out [][]byte
	for _, k := range []string{e.Attestation.PrimaryKey, e.Attestation.SecondaryKey} {
		if b, err := sas.DecodeKey(k); err == nil && k != "" {
			out = append(out, b)
		}
	}
	return out
}

// certificates reads the X.509 attestation: the device certificate of an
// individual enrollment, or the CA certificate(s) of a group.
func (e *Enrollment) certificates() ([]*x509.Certificate, error) {
	text, file := e.Attestation.CertificatePEM, e.Attestation.CertificateFile
	what := "certificate_file"
	if e.IsGroup() {
		text, file, what = e.Attestation.CAPEM, e.Attestation.CAFile, "ca_file"
	}
	if text == "" {
		if file == "" {
			return nil, fmt.Errorf("%s is required for x509 attestation", what)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		text = string(data)
	}
	var certs []*x509.Certificate
	rest := []byte(text)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", what)
	}
	return certs, nil
}

// Thumbprint is the SHA-256 thumbprint of a certificate, upper-case hex, as
// Azure shows it.
func Thumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}
