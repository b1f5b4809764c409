package main

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// configSetting is one key of the configuration, named as the file names it.
type configSetting struct {
	key   string // dotted: advanced.renewal.threshold
	value any
}

// configSettings lists every key of cfg in the order of the Config struct,
// so that a key added to Config is written without init knowing of it.
func configSettings(cfg *Config) []configSetting {
	var out []configSetting
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		for i := range v.NumField() {
			key := prefix + v.Type().Field(i).Tag.Get("mapstructure")
			if f := v.Field(i); f.Kind() == reflect.Struct {
				walk(f, key+".")
			} else {
				out = append(out, configSetting{key, f.Interface()})
			}
		}
	}
	walk(reflect.ValueOf(cfg).Elem(), "")
	return out
}

// changedAdvanced lists the advanced settings that differ from their
// defaults, named below advanced.
func changedAdvanced(cfg, def *Config) []configSetting {
	defaults := map[string]any{}
	for _, s := range configSettings(def) {
		defaults[s.key] = s.value
	}
	var out []configSetting
	for _, s := range configSettings(cfg) {
		if key, ok := strings.CutPrefix(s.key, "advanced."); ok && s.value != defaults[s.key] {
			out = append(out, configSetting{key, s.value})
		}
	}
	return out
}

// renderConfig writes the essential keys as DESIGN.md lists them, and under
// advanced only what differs from the defaults.
func renderConfig(cfg, def *Config) ([]byte, error) {
	doc := &yaml.Node{Kind: yaml.MappingNode, HeadComment: "dpsagent configuration, written by `dpsagent init`. Test it with `dpsagent check`.\n" +
		"Every key, its default and its meaning: /usr/share/doc/dpsagent/examples/config.yaml"}
	var err error
	put := func(m *yaml.Node, key string, value any, comment string) {
		v := &yaml.Node{}
		if e := v.Encode(value); e != nil && err == nil {
			err = fmt.Errorf("render %s: %w", key, e)
		}
		v.LineComment = comment
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, v)
	}
	put(doc, "id_scope", cfg.IDScope, "")
	put(doc, "registration_id", cfg.RegistrationID, "")
	put(doc, "identity", cfg.Identity, "the issued certificate (default); sas: legacy symmetric key to the hub")
	onb := mapping(doc, "onboarding")
	put(onb, "method", cfg.Onboarding.Method, "symmetric_key or x509")
	put(onb, "symmetric_key_file", cfg.Onboarding.SymmetricKeyFile, "")
	put(onb, "group_key", cfg.Onboarding.GroupKey, "true: the file holds an enrollment-group key; the device key is derived")
	x := mapping(onb, "x509")
	put(x, "certificate_file", cfg.Onboarding.X509.CertificateFile, "the birth certificate chain (PEM)")
	put(x, "key", cfg.Onboarding.X509.Key, "tpm-blob:PATH or file:PATH")
	for _, s := range changedAdvanced(cfg, def) {
		m := mapping(doc, "advanced")
		path := strings.Split(s.key, ".")
		for _, p := range path[:len(path)-1] {
			m = mapping(m, p)
		}
		put(m, path[len(path)-1], s.value, "")
	}
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("render the configuration: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render the configuration: %w", err)
	}
	return buf.Bytes(), nil
}

// mapping returns m's mapping under key, adding it when m has none.
func mapping(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	child := &yaml.Node{Kind: yaml.MappingNode}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, child)
	return child
}

// renderSummary is what will be written, in words, before it is written.
func renderSummary(cfg *Config, probe tpmProbe, path string) string {
	var b strings.Builder
	row := func(label, value string) { fmt.Fprintf(&b, "  %-17s %s\n", label, value) }
	row("ID scope", cfg.IDScope)
	row("Registration ID", cfg.RegistrationID)
	switch o := cfg.Onboarding; o.Method {
	case OnboardSymmetricKey:
		kind := "an individual enrollment's key"
		if o.GroupKey {
			kind = "an enrollment group's key; this device's key is derived from it"
		}
		row("Onboarding", "symmetric key in "+o.SymmetricKeyFile+" ("+kind+")")
	case OnboardX509:
		cert := o.X509.CertificateFile
		if c, err := readBirthCertificate(cert); err == nil {
			cert += fmt.Sprintf(" (for %q, valid until %s)", c.Subject.CommonName, c.NotAfter.UTC().Format("2006-01-02"))
		}
		row("Onboarding", "X.509 birth certificate "+cert+", key "+o.X509.Key)
	}
	row("TPM", probe.mark()+" "+probe.line(cfg.Advanced.KeyAlgorithm))
	def, err := defaultConfig()
	advanced := "the defaults"
	if err == nil {
		if changed := changedAdvanced(cfg, &def); len(changed) > 0 {
			parts := make([]string, len(changed))
			for i, s := range changed {
				parts[i] = fmt.Sprintf("%s %v", s.key, s.value)
			}
			advanced = strings.Join(parts, ", ")
		}
	}
	row("Advanced", advanced)
	row("File", fmt.Sprintf("%s (mode %04o)", path, configMode))
	return strings.TrimRight(b.String(), "\n")
}

func (c *cli) printSummary(cfg *Config, probe tpmProbe, path string) {
	fmt.Fprintf(c.stdout, "Writing this configuration:\n%s\n", renderSummary(cfg, probe, path))
}
