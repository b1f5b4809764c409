package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The package ships packaging/config.yaml as the reference of every key
// (configuration errors point operators to it), so it must list exactly the
// keys the loader knows, at their defaults, each with a comment.
const exampleConfig = "../../packaging/config.yaml"

func TestExampleConfigListsEveryKeyAtItsDefault(t *testing.T) {
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", exampleConfig, err)
	}
	found := map[string]string{}
	walkExample(t, doc.Content[0], "", found)
	for key, def := range configDefaults {
		got, ok := found[key]
		switch {
		case !ok:
			t.Errorf("%s lacks %s (default %v)", exampleConfig, key, def)
		case got != fmt.Sprint(def):
			t.Errorf("%s: %s is %q, but its default is %q", exampleConfig, key, got, fmt.Sprint(def))
		}
	}
	for key := range found {
		if _, ok := configDefaults[key]; !ok {
			t.Errorf("%s has %s, which the configuration does not know", exampleConfig, key)
		}
	}
}

// walkExample records each leaf key's value and checks every key, leaf or
// section, has a comment above it.
func walkExample(t *testing.T, n *yaml.Node, prefix string, found map[string]string) {
	t.Helper()
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := prefix + k.Value
		if k.HeadComment == "" {
			t.Errorf("%s: %s (line %d) has no comment", exampleConfig, key, k.Line)
		}
		if v.Kind == yaml.MappingNode {
			walkExample(t, v, key+".", found)
			continue
		}
		found[key] = v.Value
	}
}

// Filled in with the essentials, the example is a valid configuration.
func TestExampleConfigLoadsOnceFilledIn(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "onboarding.key")
	if err := os.WriteFile(keyFile, []byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(exampleConfig, []string{
		"DPSAGENT_ID_SCOPE=0ne00000001",
		"DPSAGENT_REGISTRATION_ID=gateway-001",
		"DPSAGENT_ONBOARDING_SYMMETRIC_KEY_FILE=" + keyFile,
	})
	if err != nil {
		t.Fatalf("the example with the essentials filled in does not load: %v", err)
	}
	if cfg.Identity != IdentityX509 || cfg.Advanced.HubPort != 8883 {
		t.Errorf("loaded %+v, want the defaults", cfg)
	}
}
