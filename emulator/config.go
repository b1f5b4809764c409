package emulator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dpsagent/dpsagent/agent/renewal"
	"github.com/dpsagent/dpsagent/emulator/pki"
)

// Config is iotemu's configuration file (snake_case YAML, unknown keys refused).
// The zero value, after Defaults, is the documented default set-up.
type Config struct {
	IDScope      string             `yaml:"id_scope" json:"id_scope"`
	DPS          ListenerConfig     `yaml:"dps" json:"dps"`
	Hubs         []HubConfig        `yaml:"hubs" json:"hubs"`
	Admin        ListenerConfig     `yaml:"admin" json:"admin"`
	Certificates CertificatesConfig `yaml:"certificates" json:"certificates"`
	Enrollments  []Enrollment       `yaml:"enrollments" json:"enrollments"`
}

// ListenerConfig is where a front-end listens: HOST:PORT, port 0 for any free
// port. "localhost:PORT" listens on both 127.0.0.1 and ::1.
type ListenerConfig struct {
	Listen string `yaml:"listen" json:"listen"`
}

// HubConfig is one IoT Hub. Host is what DPS returns as assignedHub, and what
// devices connect to and check the server certificate against.
type HubConfig struct {
	Name   string `yaml:"name" json:"name"`
	Host   string `yaml:"host" json:"host"`
	Listen string `yaml:"listen" json:"listen"`
}

// CertificatesConfig is the emulated managed PKI's policy.
type CertificatesConfig struct {
	Lifetime Duration `yaml:"lifetime" json:"lifetime"`
	// KeyTypes lists the CSR key types accepted: ecdsa-p256, ecdsa-p384,
	// rsa-2048. Default: the two EC curves, as Microsoft documents.
	KeyTypes []string `yaml:"key_types" json:"key_types"`
	// CredentialAPIDelay is how long the hub's issueCertificate takes between
	// its 202 and its 200.
	CredentialAPIDelay Duration `yaml:"credential_api_delay" json:"credential_api_delay"`
	// CredentialAPIBody selects the form of the 200 body: "object"
	// ({correlationId, certificates}, the C# and C SDKs) or "array" (a bare
	// array, as azure-sdk-for-c's preview branch parses it).
	CredentialAPIBody string `yaml:"credential_api_body" json:"credential_api_body"`
	// CredentialAPIConflictCode is the errorCode of the 409 a second request
	// gets while one is active: 409005 as the newest SDK sources (C, design
	// documents) have it, or 409004 as Microsoft's January 2026 service test
	// log shows it (reference §2.3 error table).
	CredentialAPIConflictCode int `yaml:"credential_api_conflict_code" json:"credential_api_conflict_code"`
}

// Duration reads "90s", "15m", "36h", "30d" in YAML and JSON.
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := renewal.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Defaults from the iotemu contract.
const (
	DefaultIDScope         = "0ne00000001"
	DefaultDPSListen       = "localhost:8883"
	DefaultHubName         = "hub1"
	DefaultHubHost         = "127.0.0.2"
	DefaultHubListen       = "127.0.0.2:8883"
	DefaultAdminListen     = "127.0.0.1:8080"
	DefaultLifetime        = 30 * 24 * time.Hour
	DefaultCredentialDelay = 2 * time.Second
)

// LoadConfig reads a configuration file strictly; an empty path gives the defaults.
func LoadConfig(path string) (Config, error) {
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return Config{}, fmt.Errorf("read iotemu configuration: %w", err)
		}
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("iotemu configuration %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig reads a configuration strictly (unknown keys are errors), fills
// in the defaults and validates the result. Empty input is all defaults.
func ParseConfig(data []byte) (Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	// A second document would be silently ignored: say so instead.
	var more any
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return Config{}, errors.New("more than one YAML document: keep the whole configuration in one")
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Defaults fills in every unset field.
func (c *Config) Defaults() {
	if c.IDScope == "" {
		c.IDScope = DefaultIDScope
	}
	if c.DPS.Listen == "" {
		c.DPS.Listen = DefaultDPSListen
	}
	if len(c.Hubs) == 0 {
		c.Hubs = []HubConfig{{Name: DefaultHubName, Host: DefaultHubHost, Listen: DefaultHubListen}}
	}
	for i := range c.Hubs {
		if c.Hubs[i].Host == "" {
			c.Hubs[i].Host = hostOf(c.Hubs[i].Listen)
		}
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = DefaultAdminListen
	}
	if c.Certificates.Lifetime == 0 {
		c.Certificates.Lifetime = Duration(DefaultLifetime)
	}
	if len(c.Certificates.KeyTypes) == 0 {
		c.Certificates.KeyTypes = []string{string(pki.ECDSAP256), string(pki.ECDSAP384)}
	}
	if c.Certificates.CredentialAPIDelay == 0 {
		c.Certificates.CredentialAPIDelay = Duration(DefaultCredentialDelay)
	}
	if c.Certificates.CredentialAPIBody == "" {
		c.Certificates.CredentialAPIBody = "object"
	}
	if c.Certificates.CredentialAPIConflictCode == 0 {
		c.Certificates.CredentialAPIConflictCode = hubErrConflictDefault
	}
	for i := range c.Enrollments {
		c.Enrollments[i].defaults()
	}
}

// credentialConflictCodes are the errorCodes sources give the credential
// API's 409 (reference §2.3 error table).
var credentialConflictCodes = []int{409005, 409004}

var idScopePattern = regexp.MustCompile(`^[0-9A-Za-z]{11}$`)

// Validate names the first bad key, its value and what would be valid.
func (c *Config) Validate() error {
	if !idScopePattern.MatchString(c.IDScope) {
		return fmt.Errorf("id_scope %q: use 11 letters and digits, such as %s", c.IDScope, DefaultIDScope)
	}
	names := map[string]bool{}
	for i, h := range c.Hubs {
		switch {
		case h.Name == "":
			return fmt.Errorf("hubs[%d].name is empty: give each hub a name, such as hub1", i)
		case names[h.Name]:
			return fmt.Errorf("hubs[%d].name %q is used twice", i, h.Name)
		case h.Listen == "":
			return fmt.Errorf("hubs[%d].listen is empty: give HOST:PORT, such as 127.0.0.2:8883", i)
		}
		names[h.Name] = true
	}
	if _, err := c.KeyPolicy(); err != nil {
		return fmt.Errorf("certificates.key_types: %w", err)
	}
	if l := time.Duration(c.Certificates.Lifetime); l < pki.MinLifetime {
		return fmt.Errorf("certificates.lifetime %s is too short: use at least %s, such as 90s or 30d", l, pki.MinLifetime)
	}
	if b := c.Certificates.CredentialAPIBody; b != "object" && b != "array" {
		return fmt.Errorf("certificates.credential_api_body %q: use object or array", b)
	}
	if code := c.Certificates.CredentialAPIConflictCode; !slices.Contains(credentialConflictCodes, code) {
		return fmt.Errorf("certificates.credential_api_conflict_code %d: use 409005 (the newest SDK sources) or 409004 (the January 2026 service tests)", code)
	}
	seen := map[string]bool{}
	for i := range c.Enrollments {
		e := &c.Enrollments[i]
		if err := e.Validate(names); err != nil {
			return fmt.Errorf("enrollments[%d]: %w", i, err)
		}
		if seen[e.Key()] {
			return fmt.Errorf("enrollments[%d]: %s is enrolled twice", i, e.Key())
		}
		seen[e.Key()] = true
	}
	return nil
}

// KeyPolicy is the CSR key policy the certificates section describes.
func (c *Config) KeyPolicy() (pki.KeyPolicy, error) {
	var p pki.KeyPolicy
	for _, name := range c.Certificates.KeyTypes {
		a, err := pki.ParseKeyAlgorithm(name)
		if err != nil {
			return pki.KeyPolicy{}, err
		}
		p.Allowed = append(p.Allowed, a)
	}
	return p, p.Validate()
}

// hubNames is the set of the configured hubs' names.
func (c *Config) hubNames() map[string]bool {
	names := map[string]bool{}
	for _, h := range c.Hubs {
		names[h.Name] = true
	}
	return names
}

// hub returns the configuration of the named hub.
func (c *Config) hub(name string) (HubConfig, bool) {
	for _, h := range c.Hubs {
		if h.Name == name {
			return h, true
		}
	}
	return HubConfig{}, false
}

func hostOf(listen string) string {
	host := listen
	if i := strings.LastIndex(listen, ":"); i >= 0 {
		host = listen[:i]
	}
	return strings.Trim(host, "[]")
}
