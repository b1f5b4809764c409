package main

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/dpsagent/dpsagent/agent/renewal"
	"github.com/dpsagent/dpsagent/mqtt"
	"github.com/dpsagent/dpsagent/mqtt/sas"
	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/softkey"
)

// The checks below judge one answer as it is typed. They apply the rules the
// service applies when it starts (the same patterns, checkSecretFile, the
// parsers of each setting), worded for the person answering: the reason and a
// valid example. validate() still judges the whole configuration before init
// writes it.

func checkIDScope(v string) error {
	if idScopePattern.MatchString(v) {
		return nil
	}
	return errors.New("not an ID scope: 0ne and 8 hexadecimal digits, such as 0ne00000001, from the DPS instance's overview page in the Azure portal")
}

func checkRegistrationID(v string) error {
	if registrationIDPattern.MatchString(v) {
		return nil
	}
	return errors.New("not a registration ID DPS accepts, such as gateway-001: letters, digits and - . _ : (at most 128), a letter or digit first and last")
}

func checkOnboardingMethod(v string) error {
	switch v {
	case OnboardSymmetricKey, OnboardX509:
		return nil
	}
	return fmt.Errorf("use %s (a key in a file) or %s (a birth certificate)", OnboardSymmetricKey, OnboardX509)
}

func checkSymmetricKeyFile(path string) error {
	if path == "" {
		return errors.New("name the file that holds the key, such as /etc/dpsagent/onboarding.key")
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("there is no file %s: put the enrollment's key there first (base64, as the Azure portal shows it) and run chmod 600 %s", path, path)
	}
	if err := checkSecretFile("the key file", path); err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read the key file: %w (run init as root, or as the user that owns the file)", err)
	}
	if _, err := sas.DecodeKey(string(data)); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// readBirthCertificate returns the device certificate, the first of the chain.
func readBirthCertificate(path string) (*x509.Certificate, error) {
	if path == "" {
		return nil, errors.New("name the birth certificate file (PEM, the device certificate first), such as /etc/dpsagent/birth.pem")
	}
	chain, err := readCertificates(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("there is no file %s: copy the birth certificate chain (PEM) there first", path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: use the certificate chain in PEM form (-----BEGIN CERTIFICATE-----), such as /etc/dpsagent/birth.pem", err)
	}
	cert, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("the first certificate in %s does not parse: %w", path, err)
	}
	return cert, nil
}

// checkCertificateMatchesRegistration holds DPS's rule for X.509 onboarding:
// the device certificate's common name is the registration ID.
func checkCertificateMatchesRegistration(cert *x509.Certificate, regID string) error {
	if cn := cert.Subject.CommonName; cn != regID {
		return fmt.Errorf("the certificate's common name is %q and DPS takes it as the registration ID: use --registration-id %s, or a certificate issued for %q", cn, cn, regID)
	}
	return nil
}

func checkBirthCertificate(cfg *Config, path string) error {
	cert, err := readBirthCertificate(path)
	if err != nil {
		return err
	}
	return checkCertificateMatchesRegistration(cert, cfg.RegistrationID)
}

// checkX509Key checks the key the way the service loads it. A file key must
// also belong to the birth certificate, when that can be read.
func checkX509Key(cfg *Config, spec string) error {
	const forms = "use tpm-blob:PATH (a key made in this TPM by `dpsagent birth-key`) or file:PATH (a PKCS#8 key file, mode 0600), such as tpm-blob:/etc/dpsagent/birth.tpm"
	switch {
	case strings.HasPrefix(spec, "tpm-blob:"):
		path := strings.TrimPrefix(spec, "tpm-blob:")
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("the key blob: %w: %s", err, forms)
		}
		return nil
	case strings.HasPrefix(spec, "file:"):
		k, err := softkey.LoadFile(strings.TrimPrefix(spec, "file:"))
		if err != nil {
			return err
		}
		cert, err := readBirthCertificate(cfg.Onboarding.X509.CertificateFile)
		if err != nil {
			return nil // the certificate's own question says what is wrong with it
		}
		if pub, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool }); ok && !pub.Equal(cert.PublicKey) {
			return fmt.Errorf("this key does not belong to the birth certificate %s: use the key the certificate was issued for", cfg.Onboarding.X509.CertificateFile)
		}
		return nil
	case strings.HasPrefix(spec, "tpm:"):
		return errors.New("persistent TPM handles (tpm:) are not supported yet: " + forms)
	}
	return errors.New(forms)
}

func checkDPSEndpoint(v string) error {
	if _, _, err := mqtt.ParseEndpoint(v, 8883); err != nil {
		return fmt.Errorf("%w, such as %s", err, configDefaults["advanced.dps_endpoint"])
	}
	return nil
}

func checkKeyAlgorithm(v string) error {
	_, err := keys.ParseAlgorithm(v)
	return err
}

func checkRenewalThreshold(cfg *Config, v string) error {
	_, err := renewal.ParsePolicy(v, cfg.Advanced.Renewal.Jitter)
	return err
}

func checkTrustBundle(path string) error {
	if path == "" {
		return nil
	}
	if _, err := readCertificates(path); err != nil {
		return fmt.Errorf("%w: leave it empty for Azure, or name a PEM file of CA certificates, such as /etc/dpsagent/emulator-ca.pem", err)
	}
	return nil
}

func checkHubPort(port int) error {
	if port < 1 || port > 65535 {
		return errors.New("use a TCP port from 1 to 65535, normally 8883")
	}
	return nil
}
