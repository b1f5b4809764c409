package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/dpsagent/dpsagent/agent/renewal"
	"github.com/dpsagent/dpsagent/agent/store"
	"github.com/dpsagent/dpsagent/mqtt/sas"
	"github.com/dpsagent/dpsagent/tpm"
	"github.com/dpsagent/dpsagent/tpm/keys"
)

// DefaultConfigFile is where `dpsagent init` writes and the service reads.
const DefaultConfigFile = "/etc/dpsagent/config.yaml"

// Config is /etc/dpsagent/config.yaml. The essential keys are a contract with
// scripts, the wizard and the documentation; everything else sits under
// advanced and has a default.
type Config struct {
	IDScope        string     `mapstructure:"id_scope"`
	RegistrationID string     `mapstructure:"registration_id"`
	Identity       string     `mapstructure:"identity"`
	Onboarding     Onboarding `mapstructure:"onboarding"`
	Advanced       Advanced   `mapstructure:"advanced"`
}

// Onboarding is the credential DPS knows the device by, kept for its whole life.
type Onboarding struct {
	Method           string `mapstructure:"method"`
	SymmetricKeyFile string `mapstructure:"symmetric_key_file"`
	GroupKey         bool   `mapstructure:"group_key"`
	X509             struct {
		CertificateFile string `mapstructure:"certificate_file"`
		Key             string `mapstructure:"key"`
	} `mapstructure:"x509"`
}

// Advanced settings; the defaults suit Azure and a gateway with a TPM.
type Advanced struct {
	DPSEndpoint     string `mapstructure:"dps_endpoint"`
	TrustBundleFile string `mapstructure:"trust_bundle_file"`
	TPM             string `mapstructure:"tpm"`
	KeyAlgorithm    string `mapstructure:"key_algorithm"`
	StateDir        string `mapstructure:"state_dir"`
	HubPort         int    `mapstructure:"hub_port"`
	// MetricsListen, when set, serves Prometheus metrics on this loopback
	// address (HOST:PORT); off by default.
	MetricsListen string `mapstructure:"metrics_listen"`
	Renewal       struct {
		Threshold string `mapstructure:"threshold"`
		Jitter    string `mapstructure:"jitter"`
		// Hook is a command run after each renewal (no shell), with the new
		// identity's facts in DPSAGENT_* environment variables.
		Hook string `mapstructure:"hook"`
	} `mapstructure:"renewal"`
}

// Identity modes.
const (
	IdentityX509 = "x509" // the issued certificate (the goal)
	IdentitySAS  = "sas"  // legacy: the symmetric key straight to the hub
)

// Onboarding methods.
const (
	OnboardSymmetricKey = "symmetric_key"
	OnboardX509         = "x509"
)

// defaults are every key's default; setting them also tells viper which keys
// exist, which both the DPSAGENT_* overrides and the strict check rely on.
var configDefaults = map[string]any{
	"id_scope":                         "",
	"registration_id":                  "",
	"identity":                         IdentityX509,
	"onboarding.method":                OnboardSymmetricKey,
	"onboarding.symmetric_key_file":    "/etc/dpsagent/onboarding.key",
	"onboarding.group_key":             false,
	"onboarding.x509.certificate_file": "",
	"onboarding.x509.key":              "",
	"advanced.dps_endpoint":            "global.azure-devices-provisioning.net",
	"advanced.trust_bundle_file":       "",
	"advanced.tpm":                     tpm.DefaultDevice,
	"advanced.key_algorithm":           string(keys.Auto),
	"advanced.state_dir":               store.DefaultDir,
	"advanced.hub_port":                8883,
	"advanced.metrics_listen":          "",
	"advanced.renewal.threshold":       "80%",
	"advanced.renewal.jitter":          "5%",
	"advanced.renewal.hook":            "",
}

// errNoConfig distinguishes "no configuration yet" from a bad one.
var errNoConfig = errors.New("no configuration")

// loadConfig reads path strictly, applies DPSAGENT_* overrides, and validates.
//
// The file is parsed here and handed to viper as a map, not read by viper:
// its reader links every format viper knows (TOML, dotenv, JSON) into the
// binary, 0.3 MiB on arm64, and the YAML parser's own errors name the line.
func loadConfig(path string, env []string) (*Config, error) {
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s does not exist: run `dpsagent init` to write one", errNoConfig, path)
	case err != nil:
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	file, err := parseConfigYAML(data)
	if err != nil {
		return nil, fmt.Errorf("configuration %s: %w", path, err)
	}
	v := viper.New()
	for k, d := range configDefaults {
		v.SetDefault(k, d)
	}
	if err := v.MergeConfigMap(file); err != nil {
		return nil, fmt.Errorf("configuration %s: %w", path, err)
	}
	for _, k := range v.AllKeys() {
		if _, known := configDefaults[k]; !known {
			return nil, fmt.Errorf("configuration %s: unknown key %q (check its spelling and indentation; valid keys are listed in /usr/share/doc/dpsagent/examples/config.yaml)", path, k)
		}
	}
	// Overrides: DPSAGENT_ and the key's path in capitals joined by "_".
	for _, kv := range env {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "DPSAGENT_") {
			continue
		}
		key := envKey(name)
		if key == "" {
			return nil, fmt.Errorf("environment variable %s names no configuration key", name)
		}
		v.Set(key, value)
	}
	var cfg Config
	if err := v.UnmarshalExact(&cfg); err != nil {
		return nil, fmt.Errorf("configuration %s: %w", path, err)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuration %s: %w", path, err)
	}
	return &cfg, nil
}

// parseConfigYAML reads a configuration document: one mapping of keys, or
// nothing at all (every key at its default).
func parseConfigYAML(data []byte) (map[string]any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 || doc.Content[0].Tag == "!!null" {
		return map[string]any{}, nil
	}
	if top := doc.Content[0]; top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: the file must be a mapping of keys (such as id_scope: 0ne00000001), not a %s", top.Line, yamlKind(top))
	}
	var m map[string]any
	if err := doc.Decode(&m); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if err := checkKeyCase(doc.Content[0]); err != nil {
		return nil, err
	}
	return m, nil
}

// checkKeyCase refuses two keys of one mapping that differ only in case
// (hub_port, HUB_PORT): viper folds keys to lower case and would keep one of
// the two without a word. Keys merged in with << count as the mapping's own.
// It runs after Decode, which refuses an alias that contains itself.
func checkKeyCase(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		seen := map[string]*yaml.Node{}
		for _, k := range mappingKeys(n, nil) {
			lower := strings.ToLower(k.Value)
			first := seen[lower]
			if first == nil {
				seen[lower] = k
			} else if first.Value != k.Value {
				return fmt.Errorf("lines %d and %d: the keys %q and %q differ only in case, and keys ignore case: keep one",
					first.Line, k.Line, first.Value, k.Value)
			}
		}
	}
	for _, c := range n.Content { // an alias's target is checked where it is written
		if err := checkKeyCase(c); err != nil {
			return err
		}
	}
	return nil
}

// mappingKeys appends to keys the scalar keys of the mapping m, and those of
// the mappings it merges.
func mappingKeys(m *yaml.Node, keys []*yaml.Node) []*yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode:
		case k.Value == "<<" && k.ShortTag() == "!!merge":
			sources := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				sources = v.Content
			}
			for _, src := range sources {
				if src.Kind == yaml.AliasNode {
					src = src.Alias
				}
				if src.Kind == yaml.MappingNode {
					keys = mappingKeys(src, keys)
				}
			}
		default:
			keys = append(keys, k)
		}
	}
	return keys
}

func yamlKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "single value"
	}
	return "document of another kind"
}

func envKey(name string) string {
	for k := range configDefaults {
		if "DPSAGENT_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_")) == name {
			return k
		}
	}
	return ""
}

var idScopePattern = regexp.MustCompile(`^0ne[0-9A-Fa-f]{8}$`)
var registrationIDPattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.:-]{0,126}[A-Za-z0-9])?$`)

// validate names the key, the bad value and what would be valid.
func (c *Config) validate() error {
	if !idScopePattern.MatchString(c.IDScope) {
		return fmt.Errorf("id_scope %q: use the ID scope shown on the DPS instance's overview page, such as 0ne00000001", c.IDScope)
	}
	if !registrationIDPattern.MatchString(c.RegistrationID) {
		return fmt.Errorf("registration_id %q: use up to 128 letters, digits and - . _ :, not starting or ending with a symbol, such as gateway-001", c.RegistrationID)
	}
	switch c.Identity {
	case IdentityX509, IdentitySAS:
	default:
		return fmt.Errorf("identity %q: use x509 (a certificate issued for a TPM key) or sas (the legacy symmetric key)", c.Identity)
	}
	switch c.Onboarding.Method {
	case OnboardSymmetricKey:
		if err := checkSecretFile("onboarding.symmetric_key_file", c.Onboarding.SymmetricKeyFile); err != nil {
			return err
		}
	case OnboardX509:
		if c.Onboarding.X509.CertificateFile == "" {
			return errors.New("onboarding.x509.certificate_file is empty: name the birth certificate chain (PEM)")
		}
		if k := c.Onboarding.X509.Key; !strings.HasPrefix(k, "tpm:") && !strings.HasPrefix(k, "tpm-blob:") && !strings.HasPrefix(k, "file:") {
			return fmt.Errorf("onboarding.x509.key %q: use tpm:0x81000003 (a persistent handle), tpm-blob:PATH or file:PATH", k)
		}
	default:
		return fmt.Errorf("onboarding.method %q: use symmetric_key or x509", c.Onboarding.Method)
	}
	if c.Identity == IdentitySAS && c.Onboarding.Method != OnboardSymmetricKey {
		return errors.New("identity sas needs onboarding.method symmetric_key: the hub is reached with that key")
	}
	if _, err := keys.ParseAlgorithm(c.Advanced.KeyAlgorithm); err != nil {
		return fmt.Errorf("advanced.key_algorithm: %w", err)
	}
	if c.Advanced.HubPort < 1 || c.Advanced.HubPort > 65535 {
		return fmt.Errorf("advanced.hub_port %d: use a TCP port, normally 8883", c.Advanced.HubPort)
	}
	if _, err := c.renewalPolicy(); err != nil {
		return fmt.Errorf("advanced.renewal: %w", err)
	}
	if c.Advanced.StateDir == "" || !strings.HasPrefix(c.Advanced.StateDir, "/") {
		return fmt.Errorf("advanced.state_dir %q: use an absolute path, normally %s", c.Advanced.StateDir, store.DefaultDir)
	}
	if ml := c.Advanced.MetricsListen; ml != "" {
		host, _, err := net.SplitHostPort(ml)
		ip := net.ParseIP(host)
		if err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			return fmt.Errorf("advanced.metrics_listen %q: use a loopback HOST:PORT such as 127.0.0.1:9464 (metrics are not for the network; scrape through an agent or a tunnel)", ml)
		}
	}
	if h := c.Advanced.Renewal.Hook; h != "" {
		if !strings.HasPrefix(h, "/") {
			return fmt.Errorf("advanced.renewal.hook %q: use an absolute path to an executable (it is run without a shell)", h)
		}
		if fi, err := os.Stat(h); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("advanced.renewal.hook %q: not an executable file", h)
		}
	}
	if c.Advanced.TrustBundleFile != "" {
		if _, err := os.Stat(c.Advanced.TrustBundleFile); err != nil {
			return fmt.Errorf("advanced.trust_bundle_file: %w", err)
		}
	}
	return nil
}

func (c *Config) renewalPolicy() (renewal.Policy, error) {
	return renewal.ParsePolicy(c.Advanced.Renewal.Threshold, c.Advanced.Renewal.Jitter)
}

// checkSecretFile refuses a secret others can read: a key readable by others
// may already be copied.
func checkSecretFile(key, path string) error {
	if path == "" {
		return fmt.Errorf("%s is empty: name the file that holds the key", key)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return fmt.Errorf("%s: %s has mode %04o, readable by others: run chmod 600 %s (or 640 with group dpsagent)", key, path, fi.Mode().Perm(), path)
	}
	return nil
}

// onboardingKey reads and decodes onboarding.symmetric_key_file: the device's
// key, or with group_key the enrollment group's.
func (c *Config) onboardingKey() ([]byte, error) {
	data, err := os.ReadFile(c.Onboarding.SymmetricKeyFile)
	if err != nil {
		return nil, fmt.Errorf("onboarding.symmetric_key_file: %w", err)
	}
	key, err := sas.DecodeKey(string(data))
	if err != nil {
		return nil, fmt.Errorf("onboarding.symmetric_key_file %s: %w", c.Onboarding.SymmetricKeyFile, err)
	}
	return key, nil
}

// deviceKey is this device's symmetric key: with group_key it is derived from
// the group's, as DPS derives it.
func (c *Config) deviceKey() ([]byte, error) {
	key, err := c.onboardingKey()
	if err != nil || !c.Onboarding.GroupKey {
		return key, err
	}
	return sas.DeriveDeviceKey(key, c.RegistrationID), nil
}
