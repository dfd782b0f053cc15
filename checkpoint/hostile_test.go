package checkpoint_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/checkpoint/miniotest"
)

// bothStores returns factories of a fresh empty DirStore and a fresh empty
// S3Store on a real MinIO server (one server for the test, a prefix each).
func bothStores(t *testing.T) map[string]func(t *testing.T) checkpoint.Store {
	srv := miniotest.Start(t)
	var n atomic.Int64
	return map[string]func(t *testing.T) checkpoint.Store{
		"dir": func(t *testing.T) checkpoint.Store {
			s, err := checkpoint.NewDirStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"minio": func(t *testing.T) checkpoint.Store {
			return newS3Store(t, s3Config(srv, "loraft", fmt.Sprintf("hostile/%d", n.Add(1))))
		},
	}
}

func ckFiles(step int) map[string][]byte {
	return map[string][]byte{
		"state.json":          fmt.Appendf(nil, `{"step":%d}`, step),
		"adapter.safetensors": bytes.Repeat([]byte{byte(step)}, 64+step),
	}
}

func mustSave(t *testing.T, s checkpoint.Store, run string, step int, metric float64) {
	t.Helper()
	if _, err := checkpoint.Save(context.Background(), s, run, step, ckFiles(step), map[string]float64{"macro_f1": metric}, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// TestHostileManifest: a manifest whose fields Save would never write is
// refused with ErrCorrupt naming the manifest's key and the field, and the
// loader falls back to the previous checkpoint instead of panicking or
// loading nothing.
func TestHostileManifest(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		edit  func(m map[string]any)
		raw   []byte // replaces the manifest when set
		field string
	}{
		{"short sha256", func(m map[string]any) { file(m, 0)["sha256"] = "abc" }, nil, "files[0].sha256"},
		{"empty sha256", func(m map[string]any) { file(m, 0)["sha256"] = "" }, nil, "files[0].sha256"},
		{"uppercase sha256", func(m map[string]any) {
			file(m, 0)["sha256"] = strings.ToUpper(file(m, 0)["sha256"].(string))
		}, nil, "files[0].sha256"},
		{"no files", func(m map[string]any) { m["files"] = []any{} }, nil, "field files"},
		{"files null", func(m map[string]any) { delete(m, "files") }, nil, "field files"},
		{"negative size", func(m map[string]any) { file(m, 0)["size"] = -1 }, nil, "files[0].size"},
		{"parent name", func(m map[string]any) { file(m, 0)["name"] = ".." }, nil, "files[0].name"},
		{"name with a slash", func(m map[string]any) { file(m, 1)["name"] = "../../r0/ckpt/x" }, nil, "files[1].name"},
		{"the manifest itself", func(m map[string]any) { file(m, 0)["name"] = checkpoint.ManifestName }, nil, "files[0].name"},
		{"a name twice", func(m map[string]any) { file(m, 1)["name"] = file(m, 0)["name"] }, nil, "files[1].name"},
		{"control character", func(m map[string]any) { file(m, 0)["name"] = "a\x1b[2Jb" }, nil, "files[0].name"},
		{"format 2", func(m map[string]any) { m["format"] = 2 }, nil, "field format"},
		{"another run", func(m map[string]any) { m["run"] = "r0" }, nil, "run"},
		{"not JSON", nil, []byte("{\"format\":1,"), "MANIFEST.json"},
		{"trailing data", nil, nil, "after the JSON"},
		{"larger than any manifest", nil, bytes.Repeat([]byte(" "), checkpoint.MaxManifestBytes+1), "bytes"},
	}
	s, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := fmt.Sprintf("m%d", i)
			mustSave(t, s, run, 10, 0.1)
			mustSave(t, s, run, 20, 0.2)
			key := checkpoint.Prefix(run, 20) + checkpoint.ManifestName
			b, err := checkpoint.GetBytes(ctx, s, key)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.raw != nil:
				b = tc.raw
			case tc.edit != nil:
				var m map[string]any
				if err := json.Unmarshal(b, &m); err != nil {
					t.Fatal(err)
				}
				tc.edit(m)
				if b, err = json.Marshal(m); err != nil {
					t.Fatal(err)
				}
			default:
				b = append(b, "{}"...)
			}
			if err := checkpoint.PutBytes(ctx, s, key, b); err != nil {
				t.Fatal(err)
			}
			var warned []error
			ck, got, err := checkpoint.LoadLatest(ctx, s, run, func(err error) { warned = append(warned, err) })
			if err != nil || ck.Step != 10 || !reflect.DeepEqual(got, ckFiles(10)) {
				t.Fatalf("LoadLatest = %v, %v; want step 10", ck, err)
			}
			if len(warned) != 1 || !errors.Is(warned[0], checkpoint.ErrCorrupt) ||
				!strings.Contains(warned[0].Error(), key) || !strings.Contains(warned[0].Error(), tc.field) {
				t.Fatalf("warnings %v; want one ErrCorrupt naming %s and %q", warned, key, tc.field)
			}
		})
	}
	// A Checkpoint built by hand with a short hash is refused, not a panic.
	mustSave(t, s, "direct", 1, 0)
	cks, err := checkpoint.List(ctx, s, "direct", nil)
	if err != nil || len(cks) != 1 {
		t.Fatalf("List = %v, %v", cks, err)
	}
	cks[0].Manifest.Files[0].SHA256 = "ab"
	if _, err := checkpoint.Load(ctx, s, cks[0]); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("Load with a 2-character sha256 = %v, want ErrCorrupt", err)
	}
	if err := checkpoint.Verify(ctx, s, cks[0]); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("Verify with a 2-character sha256 = %v, want ErrCorrupt", err)
	}
	if _, err := checkpoint.Save(ctx, s, "empty", 1, map[string][]byte{}, nil, time.Now()); err == nil {
		t.Fatal("Save of a checkpoint without objects succeeded")
	}
}

// file returns the i-th entry of a decoded manifest's files.
func file(m map[string]any, i int) map[string]any {
	return m["files"].([]any)[i].(map[string]any)
}

// TestRetainKeepsCommittedAndVerified: retention counts only checkpoints
// whose objects verify, never deletes the step the coordinator committed,
// and still removes what it does not keep; on a directory and on MinIO.
func TestRetainKeepsCommittedAndVerified(t *testing.T) {
	ctx := context.Background()
	scores := map[int]float64{10: 0.5, 20: 0.9, 30: 0.6, 40: 0.4, 50: 0.3}
	tests := []struct {
		name      string
		r         checkpoint.Retention
		committed int
		damaged   []int // their adapter is overwritten after the save
		want      []int
	}{
		{"newest damaged: the sound one before is the latest", checkpoint.Retention{KeepLatest: 1}, 40, []int{50}, []int{40}},
		{"committed older than the latest", checkpoint.Retention{KeepLatest: 1}, 20, nil, []int{20, 50}},
		{"committed and damaged is still not deleted", checkpoint.Retention{KeepLatest: 1}, 30, []int{30}, []int{30, 50}},
		{"latest two skip the damaged ones", checkpoint.Retention{KeepLatest: 2}, 0, []int{40, 50}, []int{20, 30}},
		{"best skips a damaged best", checkpoint.Retention{KeepLatest: 1, KeepBest: 1, Metric: "macro_f1"}, 0, []int{20}, []int{30, 50}},
		{"no rule keeps the newest sound one", checkpoint.Retention{KeepBest: 1, Metric: "none"}, 0, []int{50}, []int{40}},
	}
	for name, newStore := range bothStores(t) {
		t.Run(name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					s := newStore(t)
					for _, step := range []int{10, 20, 30, 40, 50} {
						mustSave(t, s, "r", step, scores[step])
					}
					for _, step := range tc.damaged {
						if err := checkpoint.PutBytes(ctx, s, checkpoint.Prefix("r", step)+"adapter.safetensors", []byte("damaged")); err != nil {
							t.Fatal(err)
						}
					}
					if _, err := checkpoint.RetainCommitted(ctx, s, "r", tc.committed, tc.r, time.Now()); err != nil {
						t.Fatal(err)
					}
					cks, err := checkpoint.List(ctx, s, "r", nil)
					if err != nil {
						t.Fatal(err)
					}
					var kept []int
					for _, c := range cks {
						kept = append(kept, c.Step)
					}
					if !reflect.DeepEqual(kept, tc.want) {
						t.Fatalf("kept %v, want %v", kept, tc.want)
					}
					// Every object of a deleted checkpoint is gone.
					for _, step := range []int{10, 20, 30, 40, 50} {
						objs, err := s.List(ctx, checkpoint.Prefix("r", step))
						if err != nil {
							t.Fatal(err)
						}
						if wantObjs := map[bool]int{true: 3, false: 0}[contains(tc.want, step)]; len(objs) != wantObjs {
							t.Fatalf("step %d has %d objects, want %d", step, len(objs), wantObjs)
						}
					}
				})
			}
		})
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestUploadDatasetChecksStoredCopy: an object already stored under the
// dataset's key is trusted only when its bytes hash to the key; one of the
// same size with other bytes is replaced.
func TestUploadDatasetChecksStoredCopy(t *testing.T) {
	ctx := context.Background()
	csv := []byte(",statement,status\n0,i feel fine,Normal\n")
	path := filepath.Join(t.TempDir(), "d.csv")
	if err := os.WriteFile(path, csv, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, newStore := range bothStores(t) {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			sha, size, uploaded, err := checkpoint.UploadDataset(ctx, s, path)
			if err != nil || !uploaded || size != int64(len(csv)) {
				t.Fatalf("first upload: %v, uploaded=%v size=%d", err, uploaded, size)
			}
			if _, _, uploaded, err := checkpoint.UploadDataset(ctx, s, path); err != nil || uploaded {
				t.Fatalf("second upload of the same bytes: uploaded=%v, %v; want skipped", uploaded, err)
			}
			planted := bytes.Repeat([]byte("x"), len(csv))
			if err := checkpoint.PutBytes(ctx, s, checkpoint.DatasetKey(sha), planted); err != nil {
				t.Fatal(err)
			}
			if _, _, uploaded, err := checkpoint.UploadDataset(ctx, s, path); err != nil || !uploaded {
				t.Fatalf("upload over a same-size object with other bytes: uploaded=%v, %v; want re-uploaded", uploaded, err)
			}
			got, err := checkpoint.GetBytes(ctx, s, checkpoint.DatasetKey(sha))
			if err != nil || !bytes.Equal(got, csv) {
				t.Fatalf("stored dataset = %q, %v; want the file's bytes", got, err)
			}
		})
	}
}

// TestFetchDatasetModes: the dataset cache directory is created 0700 and a
// fetched dataset written 0600.
func TestFetchDatasetModes(t *testing.T) {
	ctx := context.Background()
	s, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "d.csv")
	if err := os.WriteFile(src, []byte(",statement,status\n0,x,Normal\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sha, _, _, err := checkpoint.UploadDataset(ctx, s, src)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cache", "datasets")
	path, err := checkpoint.FetchDataset(ctx, s, sha, dir)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: checkpoint.CacheDirPerm, filepath.Dir(dir): checkpoint.CacheDirPerm, path: checkpoint.CacheFilePerm} {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
	}
}
