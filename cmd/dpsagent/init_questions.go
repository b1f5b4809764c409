package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// initQuestion is one answer `dpsagent init` takes, as a flag or from the
// wizard: where it lives in the configuration and the rule it must meet.
type initQuestion struct {
	flag    string
	usage   string
	applies func(*Config) bool // nil: always
	get     func(*Config) string
	set     func(*Config, string) error
	// check explains a value that breaks the rule: the reason and a valid
	// example. It sees the whole configuration for rules that span keys.
	check func(*Config, string) error
}

var initQuestions = []initQuestion{
	{
		flag: "id-scope", usage: "the DPS instance's ID scope, such as 0ne00000001 (required with --non-interactive)",
		get:   func(c *Config) string { return c.IDScope },
		set:   func(c *Config, v string) error { c.IDScope = v; return nil },
		check: func(_ *Config, v string) error { return checkIDScope(v) },
	},
	{
		flag: "registration-id", usage: "this device's registration ID, such as gateway-001 (the wizard offers the host name; required with --non-interactive)",
		get:   func(c *Config) string { return c.RegistrationID },
		set:   func(c *Config, v string) error { c.RegistrationID = v; return nil },
		check: func(_ *Config, v string) error { return checkRegistrationID(v) },
	},
	{
		flag: "onboarding", usage: "how DPS knows this device: symmetric_key or x509 (implied by the other onboarding flags)",
		get:   func(c *Config) string { return c.Onboarding.Method },
		set:   func(c *Config, v string) error { c.Onboarding.Method = v; return nil },
		check: func(_ *Config, v string) error { return checkOnboardingMethod(v) },
	},
	{
		flag: "symmetric-key-file", usage: "the file holding the enrollment's symmetric key (base64), not readable by others",
		applies: func(c *Config) bool { return c.Onboarding.Method == OnboardSymmetricKey },
		get:     func(c *Config) string { return c.Onboarding.SymmetricKeyFile },
		set:     func(c *Config, v string) error { c.Onboarding.SymmetricKeyFile = v; return nil },
		check:   func(_ *Config, v string) error { return checkSymmetricKeyFile(v) },
	},
	{
		flag: "x509-certificate-file", usage: "the birth certificate chain (PEM), device certificate first",
		applies: func(c *Config) bool { return c.Onboarding.Method == OnboardX509 },
		get:     func(c *Config) string { return c.Onboarding.X509.CertificateFile },
		set:     func(c *Config, v string) error { c.Onboarding.X509.CertificateFile = v; return nil },
		check:   checkBirthCertificate,
	},
	{
		flag: "x509-key", usage: "the birth certificate's key: tpm-blob:PATH (made by dpsagent birth-key) or file:PATH",
		applies: func(c *Config) bool { return c.Onboarding.Method == OnboardX509 },
		get:     func(c *Config) string { return c.Onboarding.X509.Key },
		set:     func(c *Config, v string) error { c.Onboarding.X509.Key = v; return nil },
		check:   checkX509Key,
	},
	{
		flag: "tpm", usage: "the TPM: a device path (/dev/tpmrm0), unix:PATH, tcp:HOST:PORT, or none for a software key",
		get: func(c *Config) string { return c.Advanced.TPM },
		set: func(c *Config, v string) error { c.Advanced.TPM = v; return nil },
		// What a TPM string means is the TPM package's to say: the probe asks it.
		check: func(*Config, string) error { return nil },
	},
	{
		flag: "dps-endpoint", usage: "the DPS endpoint, host[:port]",
		get:   func(c *Config) string { return c.Advanced.DPSEndpoint },
		set:   func(c *Config, v string) error { c.Advanced.DPSEndpoint = v; return nil },
		check: func(_ *Config, v string) error { return checkDPSEndpoint(v) },
	},
	{
		flag: "key-algorithm", usage: "the agent's key: auto, ecdsa-p256, ecdsa-p384 or rsa-2048",
		get:   func(c *Config) string { return c.Advanced.KeyAlgorithm },
		set:   func(c *Config, v string) error { c.Advanced.KeyAlgorithm = v; return nil },
		check: func(_ *Config, v string) error { return checkKeyAlgorithm(v) },
	},
	{
		flag: "renewal-threshold", usage: "when to renew: a share of the lifetime (80%) or a time before expiry (7d, 36h)",
		get:   func(c *Config) string { return c.Advanced.Renewal.Threshold },
		set:   func(c *Config, v string) error { c.Advanced.Renewal.Threshold = v; return nil },
		check: checkRenewalThreshold,
	},
	{
		flag: "trust-bundle-file", usage: "extra CA certificates to trust, PEM (an emulator, a TLS-inspecting proxy)",
		get:   func(c *Config) string { return c.Advanced.TrustBundleFile },
		set:   func(c *Config, v string) error { c.Advanced.TrustBundleFile = v; return nil },
		check: func(_ *Config, v string) error { return checkTrustBundle(v) },
	},
	{
		flag: "hub-port", usage: "the IoT hub's MQTT port",
		get: func(c *Config) string { return strconv.Itoa(c.Advanced.HubPort) },
		set: func(c *Config, v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return errors.New("not a number: use a TCP port from 1 to 65535, normally 8883")
			}
			c.Advanced.HubPort = n
			return nil
		},
		check: func(c *Config, _ string) error { return checkHubPort(c.Advanced.HubPort) },
	},
}

func question(flag string) initQuestion {
	for _, q := range initQuestions {
		if q.flag == flag {
			return q
		}
	}
	panic("no init question " + flag) // a typo in this package, caught by any test
}

// flagError names the flag and the value, unless the reason already quotes it.
func flagError(flag, value string, err error) error {
	if strings.Contains(err.Error(), strconv.Quote(value)) {
		return fmt.Errorf("--%s: %w", flag, err)
	}
	return fmt.Errorf("--%s %q: %w", flag, value, err)
}

var (
	symmetricKeyFlags = []string{"symmetric-key-file", "group-key"}
	x509Flags         = []string{"x509-certificate-file", "x509-key"}
)

// apply sets the answers given as flags over cfg. The onboarding method
// follows from the onboarding flags when --onboarding is not given.
func (f *initFlags) apply(changed func(flag string) bool, cfg *Config) error {
	for _, q := range initQuestions {
		if !changed(q.flag) {
			continue
		}
		v := strings.TrimSpace(*f.answers[q.flag])
		if err := q.set(cfg, v); err != nil {
			return flagError(q.flag, v, err)
		}
	}
	if changed("group-key") {
		cfg.Onboarding.GroupKey = f.groupKey
	}
	symmetric, x509 := anyChanged(changed, symmetricKeyFlags), anyChanged(changed, x509Flags)
	switch {
	case changed("onboarding"):
		if err := checkOnboardingMethod(cfg.Onboarding.Method); err != nil {
			return flagError("onboarding", cfg.Onboarding.Method, err)
		}
		if cfg.Onboarding.Method == OnboardSymmetricKey && x509 != "" {
			return fmt.Errorf("--%s is for --onboarding x509, not %s", x509, OnboardSymmetricKey)
		}
		if cfg.Onboarding.Method == OnboardX509 && symmetric != "" {
			return fmt.Errorf("--%s is for --onboarding %s, not x509", symmetric, OnboardSymmetricKey)
		}
	case symmetric != "" && x509 != "":
		return fmt.Errorf("--%s and --%s belong to different onboarding methods: keep one, or say which with --onboarding symmetric_key|x509", symmetric, x509)
	case symmetric != "":
		cfg.Onboarding.Method = OnboardSymmetricKey
	case x509 != "":
		cfg.Onboarding.Method = OnboardX509
	}
	return nil
}

func anyChanged(changed func(flag string) bool, names []string) string {
	for _, n := range names {
		if changed(n) {
			return n
		}
	}
	return ""
}

// requireFlags asks for the answers that have no sensible default in an image
// build: the build machine's host name is not the device's registration ID.
func (f *initFlags) requireFlags(changed func(flag string) bool) error {
	why := ""
	if !f.nonInteractive {
		why = " (stdin is not a terminal, so init asks nothing: run it in a terminal for the wizard, or add --accessible to answer on stdin line by line)"
	}
	for _, r := range []struct{ flag, what string }{
		{"id-scope", "the ID scope on your DPS instance's overview page, such as --id-scope 0ne00000001"},
		{"registration-id", "this device's registration ID, such as --registration-id gateway-001 (or --registration-id \"$(hostname)\")"},
	} {
		if !changed(r.flag) {
			return fmt.Errorf("--%s is required without the wizard: give %s%s", r.flag, r.what, why)
		}
	}
	return nil
}

// checkFlagAnswers checks every answer that applies, given or default, and
// names the flag that would change a bad one.
func checkFlagAnswers(cfg *Config) error {
	for _, q := range initQuestions {
		if q.applies != nil && !q.applies(cfg) {
			continue
		}
		if err := q.check(cfg, q.get(cfg)); err != nil {
			return flagError(q.flag, q.get(cfg), err)
		}
	}
	return nil
}

// absolutePaths makes the file paths absolute: the service does not start
// in the directory init ran in.
func absolutePaths(cfg *Config) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	cfg.Onboarding.SymmetricKeyFile = abs(cfg.Onboarding.SymmetricKeyFile)
	cfg.Onboarding.X509.CertificateFile = abs(cfg.Onboarding.X509.CertificateFile)
	cfg.Advanced.TrustBundleFile = abs(cfg.Advanced.TrustBundleFile)
	for _, prefix := range []string{"file:", "tpm-blob:"} {
		if p, ok := strings.CutPrefix(cfg.Onboarding.X509.Key, prefix); ok {
			cfg.Onboarding.X509.Key = prefix + abs(p)
		}
	}
	if strings.HasPrefix(cfg.Advanced.TPM, "unix:") {
		cfg.Advanced.TPM = "unix:" + abs(strings.TrimPrefix(cfg.Advanced.TPM, "unix:"))
	}
}
