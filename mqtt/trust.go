package mqtt

import (
	"crypto/x509"
	"embed"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// azureRootsFS holds the roots that Azure's DPS and IoT Hub server
// certificates chain to today (DigiCert Global Root G2, Microsoft RSA and ECC
// Root CA 2017). They are built in because gateways often ship without the
// ca-certificates package, and a device that cannot verify DPS cannot get the
// identity it would need to be fixed remotely. They are public certificates.
//
//go:embed roots/*.pem
var azureRootsFS embed.FS

// TrustConfig says which server certificates a device accepts: those chaining
// to the operating system's roots, to Azure's roots built into this package,
// or to a CA in the optional trust bundle. There is no way to turn
// verification off; a server that none of these vouch for is refused.
type TrustConfig struct {
	// BundleFile is a PEM file of extra CA certificates to trust
	// (advanced.trust_bundle_file): the emulator's CA, or that of a
	// TLS-inspecting proxy. Empty means none.
	BundleFile string
}

// Roots builds the trust pool. A system without an OS pool (no
// ca-certificates) is tolerated, because Azure's roots are built in; a bundle
// file that cannot be read or holds no certificate is an error naming it.
func (c TrustConfig) Roots() (*x509.CertPool, error) {
	return c.roots(x509.SystemCertPool)
}

// roots is Roots with the OS pool injected, so tests can take it away.
func (c TrustConfig) roots(system func() (*x509.CertPool, error)) (*x509.CertPool, error) {
	pool, err := system()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	azure, err := AzureRoots()
	if err != nil {
		return nil, err
	}
	for _, cert := range azure {
		pool.AddCert(cert)
	}
	if c.BundleFile == "" {
		return pool, nil
	}
	bundle, err := readBundle(c.BundleFile)
	if err != nil {
		return nil, err
	}
	for _, cert := range bundle {
		pool.AddCert(cert)
	}
	return pool, nil
}

// AzureRoots returns the built-in Azure root certificates, parsed afresh on
// each call so callers may keep or change the result.
func AzureRoots() ([]*x509.Certificate, error) {
	files, err := fs.Glob(azureRootsFS, "roots/*.pem")
	if err != nil {
		return nil, fmt.Errorf("built-in Azure roots: %w", err)
	}
	var certs []*x509.Certificate
	for _, name := range files {
		data, err := azureRootsFS.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("built-in Azure roots: %w", err)
		}
		parsed, err := parseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("built-in Azure root %s: %w", name, err)
		}
		certs = append(certs, parsed...)
	}
	return certs, nil
}

// readBundle reads a trust bundle, naming the file and the fix in every error
// because the file is something an operator wrote.
func readBundle(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read trust bundle %s: %w (fix or clear advanced.trust_bundle_file)", path, err)
	}
	certs, err := parseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("trust bundle %s: %w", path, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("trust bundle %s holds no certificate: it must contain PEM blocks starting with -----BEGIN CERTIFICATE-----", path)
	}
	return certs, nil
}

// errBadCertificateBlock is returned for a CERTIFICATE block that does not
// parse; other PEM block types are skipped, as bundles sometimes carry them.
var errBadCertificateBlock = errors.New("a CERTIFICATE block does not parse")

func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return certs, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w (certificate %d): %w", errBadCertificateBlock, len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
}
