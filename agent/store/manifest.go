package store

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Manifest is the committed state: which identity is in use, which one is
// staged during a renewal, and the registration facts a status screen shows.
// Empty strings and zero times mean "unknown" and are written as JSON null.
type Manifest struct {
	// IDScope is the DPS ID scope the identity was registered under.
	IDScope string
	// Current is the identity in use; nil before the first provisioning.
	Current *Identity
	// Next is a renewed identity staged while it is being tried; nil otherwise.
	Next *Identity
	// LastRegistration is the outcome of the last DPS registration; nil if none.
	LastRegistration *Registration
	// LastError is the last failure worth showing to an operator; nil if none.
	LastError *Failure
}

// Identity is one key and its issued chain, with the facts needed to use it.
type Identity struct {
	// KeyFile and ChainFile are names inside the state directory, as returned
	// by Store.WriteBlob. The chain file (PEM, leaf first) is the truth about
	// the certificate; Serial, NotBefore and NotAfter are a copy for display.
	KeyFile   string
	ChainFile string

	KeyAlgorithm KeyAlgorithm
	KeyStorage   KeyStorage

	RegistrationID string
	DeviceID       string
	AssignedHub    string
	ProvisionedAt  time.Time
	Path           Path

	Serial    string
	NotBefore time.Time
	NotAfter  time.Time
}

// Registration is the outcome of a DPS registration, as DPS reported it.
type Registration struct {
	At          time.Time
	OperationID string
	Status      string // e.g. "assigned", "failed", "disabled"
	Substatus   string // e.g. "initialAssignment", "deviceDataMigrated"
}

// Failure is an error recorded for the status screen: what happened and what
// the operator can do about it.
type Failure struct {
	At      time.Time
	Message string
	Hint    string
	Code    string // a stable code for scripts, or the cloud's error code
}

// KeyAlgorithm is the algorithm of an identity's key.
type KeyAlgorithm string

const (
	ECDSAP256 KeyAlgorithm = "ecdsa-p256"
	ECDSAP384 KeyAlgorithm = "ecdsa-p384"
	RSA2048   KeyAlgorithm = "rsa-2048"
)

// KeyStorage says where an identity's key lives, so it is loaded by the right backend.
type KeyStorage string

const (
	// StorageTPM: the key file holds TPM public/private blobs, usable only inside that TPM.
	StorageTPM KeyStorage = "tpm"
	// StorageFile: the key file holds a PKCS#8 private key (the software backend).
	StorageFile KeyStorage = "file"
	// StorageSAS: the legacy identity mode: no key or certificate of its own;
	// the hub is reached with the onboarding symmetric key. No files.
	StorageSAS KeyStorage = "sas"
)

// Path says how an identity's certificate was obtained.
type Path string

const (
	PathDPS Path = "dps" // DPS registration with a CSR
	PathHub Path = "hub" // the IoT Hub credential API
)

func (a KeyAlgorithm) valid() bool { return a == ECDSAP256 || a == ECDSAP384 || a == RSA2048 }
func (s KeyStorage) valid() bool   { return s == StorageTPM || s == StorageFile || s == StorageSAS }
func (p Path) valid() bool         { return p == PathDPS || p == PathHub }

// SetCertificate copies the display facts of the issued leaf certificate
// into the identity. Serial is lower-case hexadecimal without separators.
func (id *Identity) SetCertificate(leaf *x509.Certificate) {
	id.Serial = leaf.SerialNumber.Text(16)
	id.NotBefore = leaf.NotBefore.UTC()
	id.NotAfter = leaf.NotAfter.UTC()
}

// Files returns the names of the files the identity owns.
func (id *Identity) Files() []string {
	if id.KeyStorage == StorageSAS {
		return nil
	}
	return []string{id.KeyFile, id.ChainFile}
}

// Clone returns a deep copy, so a caller's edits never reach the store's copy.
func (m *Manifest) Clone() *Manifest {
	c := *m
	c.Current = clonePtr(m.Current)
	c.Next = clonePtr(m.Next)
	c.LastRegistration = clonePtr(m.LastRegistration)
	c.LastError = clonePtr(m.LastError)
	return &c
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

// files returns every file name the manifest refers to.
func (m *Manifest) files() []string {
	var names []string
	for _, id := range []*Identity{m.Current, m.Next} {
		if id != nil {
			names = append(names, id.Files()...)
		}
	}
	return names
}

// validate checks what can be checked without the file system. The same rules
// apply to a manifest read from disk and to one about to be committed, so the
// store never writes a manifest it would refuse to read.
func (m *Manifest) validate() error {
	if m.Next != nil && m.Current == nil {
		return errors.New("a next identity is staged but there is no current one")
	}
	if err := m.validateIdentity("current", m.Current); err != nil {
		return err
	}
	if err := m.validateIdentity("next", m.Next); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, name := range m.files() {
		if seen[name] {
			// Sharing a file would let removing one identity's files break the other.
			return fmt.Errorf("file %q is named twice", name)
		}
		seen[name] = true
	}
	for _, t := range []struct {
		field string
		at    time.Time
	}{{"last_registration.at", regAt(m.LastRegistration)}, {"last_error.at", failAt(m.LastError)}} {
		if err := checkTime(t.field, t.at); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manifest) validateIdentity(which string, id *Identity) error {
	if id == nil {
		return nil
	}
	if id.KeyStorage == StorageSAS {
		if id.KeyFile != "" || id.ChainFile != "" || id.KeyAlgorithm != "" {
			return fmt.Errorf("%s: a sas identity has no key_file, chain_file or key_algorithm", which)
		}
		return m.validateFacts(which, id)
	}
	if err := checkBlobName(id.KeyFile); err != nil {
		return fmt.Errorf("%s.key_file: %w", which, err)
	}
	if err := checkBlobName(id.ChainFile); err != nil {
		return fmt.Errorf("%s.chain_file: %w", which, err)
	}
	if !id.KeyAlgorithm.valid() {
		return fmt.Errorf("%s.key_algorithm %q: want %s, %s or %s", which, id.KeyAlgorithm, ECDSAP256, ECDSAP384, RSA2048)
	}
	if !id.KeyStorage.valid() {
		return fmt.Errorf("%s.key_storage %q: want %s, %s or %s", which, id.KeyStorage, StorageTPM, StorageFile, StorageSAS)
	}
	return m.validateFacts(which, id)
}

// validateFacts checks what every identity needs to connect.
func (m *Manifest) validateFacts(which string, id *Identity) error {
	if !id.Path.valid() {
		return fmt.Errorf("%s.path %q: want %s or %s", which, id.Path, PathDPS, PathHub)
	}
	// Without these the identity cannot be used to connect, so it is not one.
	for _, f := range []struct{ field, value string }{
		{"registration_id", id.RegistrationID}, {"device_id", id.DeviceID}, {"assigned_hub", id.AssignedHub},
	} {
		if f.value == "" {
			return fmt.Errorf("%s.%s is empty", which, f.field)
		}
	}
	for _, t := range []struct {
		field string
		at    time.Time
	}{{"provisioned_at", id.ProvisionedAt}, {"not_before", id.NotBefore}, {"not_after", id.NotAfter}} {
		if err := checkTime(which+"."+t.field, t.at); err != nil {
			return err
		}
	}
	return nil
}

// checkTime refuses times RFC 3339 cannot carry (years outside 0000-9999), so
// every committed manifest reads back as written.
func checkTime(field string, t time.Time) error {
	if y := t.UTC().Year(); !t.IsZero() && (y < 0 || y > 9999) {
		return fmt.Errorf("%s: year %d is outside 0000-9999", field, y)
	}
	return nil
}

func regAt(r *Registration) time.Time {
	if r == nil {
		return time.Time{}
	}
	return r.At
}

func failAt(f *Failure) time.Time {
	if f == nil {
		return time.Time{}
	}
	return f.At
}
