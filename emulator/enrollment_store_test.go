package emulator

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// enrollmentTestConfig has two hubs, so re-provisioning shows, and the
// given enrollments in its configuration file.
func enrollmentTestConfig(enrollments ...Enrollment) Config {
	return Config{
		DPS: ListenerConfig{Listen: "127.0.0.1:0"},
		Hubs: []HubConfig{
			{Name: "hub1", Host: hub1Host, Listen: "127.0.0.1:0"},
			{Name: "hub2", Host: hub2Host, Listen: "127.0.0.1:0"},
		},
		Admin:        ListenerConfig{Listen: "127.0.0.1:0"},
		Certificates: CertificatesConfig{CredentialAPIDelay: Duration(100 * time.Millisecond)},
		Enrollments:  enrollments,
	}
}

// registerWithDPS runs a symmetric-key device's whole registration over
// paho and TLS, with the SAS token password, and returns its final
// registration state.
func registerWithDPS(t *testing.T, ep *Endpoints, regID, password string) wireState {
	t.Helper()
	cl := dpsDial{regID: regID, password: password}.mustConnect(t, ep)
	defer cl.c.Disconnect(0)
	_, st := cl.provision(registerBody(regID, nil, ""))
	return *st.RegistrationState
}

func mustCall(t *testing.T, ep *Endpoints, method, path, body string, want int) string {
	t.Helper()
	status, got := call(t, ep, method, path, body)
	if status != want {
		t.Fatalf("%s %s %s = %d %s, want %d", method, path, body, status, got, want)
	}
	return got
}

// Enrollments created, patched and deleted through the admin API are what
// DPS has after a restart over the same data directory: the list is the
// same, a device of a created enrollment registers, a patched one answers as
// patched, and deleted ones stay deleted, whether the admin API or the
// configuration file made them. A device DPS moved keeps its first hub:
// moving back is reprovisionedToInitialAssignment, as before the restart.
func TestEnrollmentsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	apiKey, cfgKey, moverKey := dpsKey("api-dev"), dpsKey("cfg-dev"), dpsKey("mover")
	cfg := enrollmentTestConfig(dpsSymmetricEnrollment("cfg-dev", cfgKey), dpsSymmetricEnrollment("cfg-gone", cfgKey))
	enroll := func(regID, key string, extra string) string {
		return `{"registration_id":"` + regID + `","attestation":{"type":"symmetric_key","primary_key":"` + key + `"}` + extra + `}`
	}

	env := openHubEnv(t, cfg, dir, nil, fastDPS)
	mustCall(t, env.ep, "POST", "/api/enrollments", enroll("api-dev", apiKey, `,"hubs":["hub2"]`), 201)
	mustCall(t, env.ep, "POST", "/api/enrollments", enroll("short-lived", apiKey, ""), 201)
	mustCall(t, env.ep, "DELETE", "/api/enrollments/short-lived", "", 204)
	mustCall(t, env.ep, "POST", "/api/enrollments", `{"group_id":"api-fleet","attestation":{"type":"symmetric_key","primary_key":"`+apiKey+`"}}`, 201)
	mustCall(t, env.ep, "PATCH", "/api/enrollments/cfg-dev", `{"enabled":false}`, 200)
	mustCall(t, env.ep, "DELETE", "/api/enrollments/cfg-gone", "", 204)
	mustCall(t, env.ep, "POST", "/api/enrollments", enroll("mover", moverKey, `,"allocation":"static","hubs":["hub1"]`), 201)
	if st := registerWithDPS(t, env.ep, "mover", dpsSAS(t, env.ep.IDScope, "mover", moverKey)); st.AssignedHub != hub1Host || st.Substatus != dpsSubstatusInitial {
		t.Fatalf("mover's first registration: %+v", st)
	}
	mustCall(t, env.ep, "PATCH", "/api/enrollments/mover", `{"hubs":["hub2"]}`, 200)
	if st := registerWithDPS(t, env.ep, "mover", dpsSAS(t, env.ep.IDScope, "mover", moverKey)); st.AssignedHub != hub2Host || st.Substatus != dpsSubstatusMigrated {
		t.Fatalf("mover moved to hub2: %+v", st)
	}
	before := mustCall(t, env.ep, "GET", "/api/enrollments", "", 200)
	env.close()

	env = openHubEnv(t, cfg, dir, nil, fastDPS)
	if after := mustCall(t, env.ep, "GET", "/api/enrollments", "", 200); compact(t, after) != compact(t, before) {
		t.Errorf("enrollments after the restart:\n%s\nbefore it:\n%s", after, before)
	}
	var list []Enrollment
	if err := json.Unmarshal([]byte(before), &list); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range list {
		keys = append(keys, e.Key())
	}
	if want := []string{"registration:api-dev", "registration:cfg-dev", "registration:mover", "group:api-fleet"}; !slices.Equal(keys, want) {
		t.Errorf("enrollments %v, want %v", keys, want)
	}
	if st := registerWithDPS(t, env.ep, "api-dev", dpsSAS(t, env.ep.IDScope, "api-dev", apiKey)); st.Status != "assigned" || st.AssignedHub != hub2Host || st.Substatus != dpsSubstatusInitial {
		t.Errorf("device of a created enrollment after the restart: %+v, want assigned to %s, initialAssignment", st, hub2Host)
	}
	if st := registerWithDPS(t, env.ep, "member-1", dpsGroupSAS(t, env.ep.IDScope, "member-1", apiKey)); st.Status != "assigned" {
		t.Errorf("member of a created group after the restart: %+v", st)
	}
	if st := registerWithDPS(t, env.ep, "cfg-dev", dpsSAS(t, env.ep.IDScope, "cfg-dev", cfgKey)); st.Status != "disabled" {
		t.Errorf("device of a disabled configuration enrollment after the restart: %+v, want disabled", st)
	}
	if _, err := (dpsDial{regID: "cfg-gone", password: dpsSAS(t, env.ep.IDScope, "cfg-gone", cfgKey)}).connect(t, env.ep); err == nil {
		t.Error("a device of a deleted configuration enrollment connected to DPS after the restart")
	}
	mustCall(t, env.ep, "PATCH", "/api/enrollments/mover", `{"hubs":["hub1"]}`, 200)
	if st := registerWithDPS(t, env.ep, "mover", dpsSAS(t, env.ep.IDScope, "mover", moverKey)); st.AssignedHub != hub1Host || st.Substatus != dpsSubstatusReturned {
		t.Errorf("mover back on its first hub after the restart: hub %s substatus %s, want %s %s", st.AssignedHub, st.Substatus, hub1Host, dpsSubstatusReturned)
	}

	files := registryFiles(t, filepath.Join(dir, EnrollmentsDir))
	if want := []string{"group.api-fleet.json", "registration.api-dev.json", "registration.cfg-dev.json", "registration.cfg-gone.json", "registration.mover.json"}; !slices.Equal(slices.Sorted(maps.Keys(files)), want) {
		t.Errorf("enrollment files %v, want %v", slices.Sorted(maps.Keys(files)), want)
	}
}

// openLogged is New over dir with logs a test can read; nothing listens.
func openLogged(t *testing.T, cfg Config, dir string) (*Emulator, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	e, err := New(cfg, dir, Options{Logger: zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, logs
}

// When the configuration file and the admin API's saved changes both speak
// of an enrollment, the change wins until the configuration file's entry is
// edited, added or removed after it; then the file wins and the change is
// dropped for good. Every conflict is logged.
func TestEnrollmentPrecedence(t *testing.T) {
	key := dpsKey("precedence")
	original := dpsSymmetricEnrollment("dev", key)
	edited := original
	edited.Allocation = AllocStatic
	for _, tc := range []struct {
		name string
		// change is the admin API's change, made over the first configuration.
		change      func(s *State) error
		first, then []Enrollment
		wantAlloc   string // "" for no enrollment
		wantLog     string
		wantFile    bool
	}{
		{"patched, file unchanged", patchAllocation(AllocEvenly), []Enrollment{original}, []Enrollment{original},
			AllocEvenly, "changed through the admin API", true},
		{"patched, file edited since", patchAllocation(AllocEvenly), []Enrollment{original}, []Enrollment{edited},
			AllocStatic, "the configuration file was edited", false},
		{"patched, removed from the file since", patchAllocation(AllocEvenly), []Enrollment{original}, nil,
			"", "the configuration file was edited", false},
		{"deleted, file unchanged", deleteDev, []Enrollment{original}, []Enrollment{original},
			"", "deleted through the admin API", true},
		{"deleted, file edited since", deleteDev, []Enrollment{original}, []Enrollment{edited},
			AllocStatic, "the configuration file was edited", false},
		{"created, then added to the file", createDev(original), nil, []Enrollment{edited},
			AllocStatic, "the configuration file was edited", false},
		{"created, file never had it", createDev(original), nil, nil,
			AllocHashed, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			e, _ := openLogged(t, enrollmentTestConfig(tc.first...), dir)
			if err := tc.change(e.State()); err != nil {
				t.Fatal(err)
			}
			_ = e.Close()
			e, logs := openLogged(t, enrollmentTestConfig(tc.then...), dir)
			got, ok := e.State().IndividualEnrollment("dev")
			switch {
			case tc.wantAlloc == "" && ok:
				t.Errorf("enrollment %+v after the restart, want none", got)
			case tc.wantAlloc != "" && (!ok || got.Allocation != tc.wantAlloc):
				t.Errorf("enrollment found %v, allocation %q after the restart, want %q", ok, got.Allocation, tc.wantAlloc)
			}
			if tc.wantLog != "" && logs.FilterMessageSnippet(tc.wantLog).FilterField(zap.String("enrollment", "registration:dev")).Len() != 1 {
				t.Errorf("no log line saying %q for the enrollment; logged: %v", tc.wantLog, logMessages(logs))
			}
			_, err := os.Stat(filepath.Join(dir, EnrollmentsDir, "registration.dev.json"))
			if exists := err == nil; exists != tc.wantFile {
				t.Errorf("the change's file exists: %v, want %v", exists, tc.wantFile)
			}
			// A third start decides as the second did.
			_ = e.Close()
			e, _ = openLogged(t, enrollmentTestConfig(tc.then...), dir)
			if again, ok2 := e.State().IndividualEnrollment("dev"); ok2 != ok || again.Allocation != got.Allocation {
				t.Errorf("third start: found %v %q, second: %v %q", ok2, again.Allocation, ok, got.Allocation)
			}
		})
	}
}

func patchAllocation(alloc string) func(*State) error {
	return func(s *State) error {
		_, err := s.UpdateEnrollment("registration:dev", func(e *Enrollment) error { e.Allocation = alloc; return nil })
		return err
	}
}

func deleteDev(s *State) error {
	_, err := s.DeleteEnrollment("registration:dev")
	return err
}

func createDev(e Enrollment) func(*State) error {
	return func(s *State) error { return s.CreateEnrollment(e) }
}

func logMessages(logs *observer.ObservedLogs) []string {
	var out []string
	for _, l := range logs.All() {
		out = append(out, l.Message)
	}
	return out
}

// A change that cannot be saved is refused with a 500 and not made: the
// admin API never reports a change a restart would undo.
func TestEnrollmentSaveFailureIsNotMade(t *testing.T) {
	dir := t.TempDir()
	key := dpsKey("unsaved")
	env := openHubEnv(t, enrollmentTestConfig(dpsSymmetricEnrollment("cfg-dev", key)), dir, nil, nil)
	if err := os.RemoveAll(filepath.Join(dir, EnrollmentsDir)); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct{ method, path, body string }{
		{"POST", "/api/enrollments", `{"registration_id":"new-dev","attestation":{"type":"symmetric_key","primary_key":"` + key + `"}}`},
		{"PATCH", "/api/enrollments/cfg-dev", `{"enabled":false}`},
		{"DELETE", "/api/enrollments/cfg-dev", ""},
	} {
		if status, body := call(t, env.ep, s.method, s.path, s.body); status != 500 || !strings.Contains(body, EnrollmentsDir) {
			t.Errorf("%s %s with the directory gone: %d %s, want 500 naming the file", s.method, s.path, status, body)
		}
	}
	got := env.e.State().Enrollments()
	if len(got) != 1 || got[0].RegistrationID != "cfg-dev" || !got[0].IsEnabled() {
		t.Errorf("enrollments after the failed changes: %+v, want cfg-dev alone, enabled", got)
	}
}

// enrollmentFileJSON is enrollment gw-1's file, with extra fields appended.
func enrollmentFileJSON(extra string) string {
	return `{"format_version":1,"enrollment":"registration:gw-1","deleted":false,"definition":` +
		`{"registration_id":"gw-1","enabled":true,"attestation":{"type":"symmetric_key","primary_key":"` + testKey + `"},` +
		`"issue_certificates":true,"hubs":null,"allocation":"hashed","reprovision":"migrate"},"config_sha256":""` + extra + `}`
}

// An enrollment file iotemu cannot read stops it with an error naming the
// file and the ways out; the file is left as it was.
func TestEnrollmentRefusesDamagedFile(t *testing.T) {
	file := enrollmentFileJSON("")
	const name = "registration.gw-1.json"
	for _, tc := range []struct {
		name, file, content, want string
	}{
		{"empty", name, "", "not an enrollment file"},
		{"torn", name, file[:len(file)/2], "not an enrollment file"},
		{"no version", name, strings.Replace(file, `"format_version":1,`, "", 1), "no format_version"},
		{"newer version", name, `{"format_version":2,"enrollment":"registration:gw-1","labels":{}}`, "format_version 2: this iotemu reads 1"},
		{"unknown field", name, enrollmentFileJSON(`,"colour":"red"`), `unknown field "colour"`},
		{"unknown definition field", name, strings.Replace(file, `"enabled":true`, `"enabled":true,"colour":"red"`, 1), `unknown field "colour"`},
		{"second value", name, file + " {}", "not an enrollment file"},
		{"misnamed", "registration.gw-2.json", file, "it holds enrollment registration:gw-1, whose file is registration.gw-1.json"},
		{"key of another", name, strings.Replace(file, `"registration_id":"gw-1"`, `"registration_id":"gw-2"`, 1), "the definition is of registration:gw-2"},
		{"upper-case key", name, strings.Replace(file, `"enrollment":"registration:gw-1"`, `"enrollment":"registration:GW-1"`, 1), "want registration:ID"},
		{"bad allocation", name, strings.Replace(file, `"hashed"`, `"random"`, 1), "use static, evenly or hashed"},
		{"bad key", name, strings.Replace(file, testKey, "not base64!", 1), "attestation"},
		{"deleted with a definition", name, strings.Replace(file, `"deleted":false`, `"deleted":true`, 1), "deleted, yet it has a definition"},
		{"deleted, nothing configured", name, `{"format_version":1,"enrollment":"registration:gw-1","deleted":true,"definition":null,"config_sha256":""}`, "no configuration file definition"},
		{"no definition", name, `{"format_version":1,"enrollment":"registration:gw-1","deleted":false,"definition":null,"config_sha256":""}`, "no definition, and not deleted"},
		{"bad digest", name, strings.Replace(file, `"config_sha256":""`, `"config_sha256":"abc"`, 1), `config_sha256 "abc"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			enrollments := filepath.Join(dir, EnrollmentsDir)
			if err := os.Mkdir(enrollments, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(enrollments, tc.file)
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			e, err := New(enrollmentTestConfig(), dir, Options{Logger: zaptest.NewLogger(t)})
			if err == nil {
				e.Close()
				t.Fatal("the emulator started over a damaged enrollment file")
			}
			for _, want := range []string{path, tc.want, "delete it to undo the admin API's change", "delete " + enrollments + " to undo them all"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if after, _ := os.ReadFile(path); string(after) != tc.content {
				t.Error("the damaged file was changed")
			}
		})
	}
}

// A well-formed file loads, and files that are not the store's (a temporary
// file a crash left, a note) are passed over.
func TestEnrollmentFilesLoad(t *testing.T) {
	dir := t.TempDir()
	enrollments := filepath.Join(dir, EnrollmentsDir)
	if err := os.Mkdir(enrollments, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"registration.gw-1.json":                enrollmentFileJSON(""),
		".registration.gw-1.json.123456789.tmp": `{"format_version":1`,
		"README":                                "enrollments of the demo",
	} {
		if err := os.WriteFile(filepath.Join(enrollments, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e, _ := openLogged(t, enrollmentTestConfig(), dir)
	if got := e.State().Enrollments(); len(got) != 1 || got[0].RegistrationID != "gw-1" {
		t.Errorf("enrollments %+v, want gw-1 alone", got)
	}
}
