package dashboard_test

import (
	"bytes"
	"io"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/loraft/loraft/coordinator/dashboard"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// emptyBackend serves no sweeps: enough for the static files.
type emptyBackend struct{ dashboard.Backend }

func (emptyBackend) Raft() dashboard.RaftStatus { return dashboard.RaftStatus{ID: "n1"} }
func (emptyBackend) State() *pb.State           { return &pb.State{} }

var externalURL = regexp.MustCompile(`https?://`)

// TestAssetsAreEmbeddedAndLocal: every file under static/ is served from
// the binary byte for byte, and no page, script or stylesheet names
// another origin (the vendored uPlot's licence header and LICENSE file
// aside), so nothing is fetched at run time.
func TestAssetsAreEmbeddedAndLocal(t *testing.T) {
	h, err := dashboard.New(dashboard.Config{Backend: emptyBackend{}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	var files int
	for _, root := range []string{"static", "templates"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			files++
			disk, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			vendored := strings.Contains(p, "/vendor/")
			for i, line := range strings.Split(string(disk), "\n") {
				if !externalURL.MatchString(line) {
					continue
				}
				licence := vendored && (filepath.Base(p) == "LICENSE" || i == 0 && strings.HasPrefix(line, "/*!") && strings.Contains(line, "*/"))
				if !licence || strings.Count(line, "http") > 1 {
					t.Errorf("%s line %d names another origin: %.120s", p, i+1, line)
				}
			}
			if root != "static" {
				return nil
			}
			resp, err := srv.Client().Get(srv.URL + "/" + filepath.ToSlash(p))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			served, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if resp.StatusCode != 200 || !bytes.Equal(served, disk) {
				t.Errorf("GET /%s: %d, %d bytes, want the %d on disk", p, resp.StatusCode, len(served), len(disk))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if files < 6 {
		t.Fatalf("only %d files under static/ and templates/", files)
	}
	// Rendered pages name only this origin's paths, too.
	for _, path := range []string{"/", "/login"} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if externalURL.Match(body) {
			t.Errorf("GET %s names another origin:\n%s", path, body)
		}
	}
}
