package pki

import (
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"os"
	"sync"
	"time"
)

// Lifetimes of the device CAs. They are far longer than any leaf, so the
// chain never expires under a running fleet; the issuing CA never outlives
// the root.
const (
	deviceRootLifetime    = 20 * 365 * 24 * time.Hour
	deviceIssuingLifetime = 10 * 365 * 24 * time.Hour
)

// DeviceCA is the device PKI: it issues device certificates for CSRs that
// passed CheckCSR, revokes them per device, and verifies the chains devices
// present to the hub. It is safe for concurrent use; issues run in parallel.
type DeviceCA struct {
	dir     string
	now     func() time.Time
	root    *authority
	issuing *authority
	roots   *x509.CertPool

	// mu guards generations and the revocations file.
	mu          sync.Mutex
	generations map[string]revokedDevice
}

// OpenDeviceCA loads the device PKI from dir, creating dir and the CAs on
// first use. The root certificate file is written last and marks a complete
// PKI: without it, any leftover files are from an interrupted first start
// and are replaced.
func OpenDeviceCA(dir string, opts Options) (*DeviceCA, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("open device PKI: create data directory: %w", err)
	}
	ca := &DeviceCA{dir: dir, now: opts.clock()}
	created, err := exists(dir, DeviceRootFile)
	if err != nil {
		return nil, fmt.Errorf("open device PKI in %s: %w", dir, err)
	}
	if created {
		err = ca.load()
	} else {
		err = ca.create()
	}
	if err != nil {
		return nil, err
	}
	ca.roots = x509.NewCertPool()
	ca.roots.AddCert(ca.root.cert)
	if ca.generations, err = loadRevocations(dir); err != nil {
		return nil, fmt.Errorf("open device PKI in %s: %w", dir, err)
	}
	return ca, nil
}

func (ca *DeviceCA) create() error {
	now := ca.now()
	root, err := newSelfSignedCA(pkix.Name{Organization: []string{"iotemu"}, CommonName: "iotemu Device Root CA"},
		elliptic.P384(), now, deviceRootLifetime)
	if err != nil {
		return fmt.Errorf("open device PKI: %w", err)
	}
	issuing, err := newCA(root, pkix.Name{Organization: []string{"iotemu"}, CommonName: "iotemu Device Issuing CA"},
		elliptic.P384(), now, deviceIssuingLifetime)
	if err != nil {
		return fmt.Errorf("open device PKI: %w", err)
	}
	if err := issuing.save(ca.dir, authorityFiles{cert: deviceIssuingFile, key: deviceIssuingKeyFile}); err != nil {
		return fmt.Errorf("open device PKI: %w", err)
	}
	if err := root.save(ca.dir, authorityFiles{cert: DeviceRootFile, key: deviceRootKeyFile}); err != nil {
		return fmt.Errorf("open device PKI: %w", err)
	}
	ca.root, ca.issuing = root, issuing
	return nil
}

func (ca *DeviceCA) load() error {
	root, err := loadAuthority(ca.dir, authorityFiles{cert: DeviceRootFile, key: deviceRootKeyFile})
	if err != nil {
		return fmt.Errorf("open device PKI: %w", err)
	}
	issuing, err := loadAuthority(ca.dir, authorityFiles{cert: deviceIssuingFile, key: deviceIssuingKeyFile})
	if err != nil {
		return fmt.Errorf("open device PKI: %w (the root exists, so the issuing CA must too; restore it, or remove all device-* files to start a new PKI)", err)
	}
	if err := issuing.cert.CheckSignatureFrom(root.cert); err != nil {
		return fmt.Errorf("open device PKI: %s is not signed by %s: %w", deviceIssuingFile, DeviceRootFile, err)
	}
	ca.root, ca.issuing = root, issuing
	return nil
}

// Root is the device root certificate. The caller must not modify it.
func (ca *DeviceCA) Root() *x509.Certificate { return ca.root.cert }

// Issuing is the issuing CA certificate. The caller must not modify it.
func (ca *DeviceCA) Issuing() *x509.Certificate { return ca.issuing.cert }
