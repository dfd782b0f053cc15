package peft

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Card is what a model card says about an adapter; ModelCard renders it as
// the README.md of a PEFT adapter directory (YAML front matter that the
// Hugging Face Hub reads, then the card).
type Card struct {
	// BaseModel is the base's Hub id or local path (the adapter config's
	// base_model_name_or_path).
	BaseModel   string
	Labels      []string
	Run         string
	Step        int
	Dataset     string // e.g. "Combined Data.csv (sha256 …)"
	SplitDesc   string
	Hyper       map[string]string // training hyperparameters, name → value
	LoRA        map[string]string
	Metrics     map[string]float64 // headline test metrics (accuracy, macro_f1, ece, …)
	EvalTables  string             // markdown: per-class table and confusion matrix
	RandomBase  bool               // the base was random-init (a demo, not a usable classifier)
	Temperature float64
}

// ModelCard renders the card. It always states that the model is a
// screening and research aid and not a diagnostic tool.
func ModelCard(c Card) string {
	var b strings.Builder
	b.WriteString("---\n")
	fmt.Fprintf(&b, "base_model: %s\n", yamlScalar(c.BaseModel))
	b.WriteString("library_name: peft\npipeline_tag: text-classification\nlicense: apache-2.0\ntags:\n")
	for _, t := range []string{"peft", "lora", "qlora", "text-classification", "mental-health", "loraft"} {
		fmt.Fprintf(&b, "- %s\n", t)
	}
	b.WriteString("---\n\n")
	fmt.Fprintf(&b, "# %s — mental-health statement classifier (LoRA adapter)\n\n", c.Run)
	fmt.Fprintf(&b, "A LoRA adapter (with a trained classification head) for `%s` that sorts a short text into one of %d classes: %s. "+
		"It was trained by [loraft](https://github.com/loraft/loraft) with a frozen NF4-quantized base (QLoRA) and outputs calibrated confidence scores (temperature %.3f, fitted on the validation split).\n\n",
		c.BaseModel, len(c.Labels), strings.Join(c.Labels, ", "), c.Temperature)
	if c.RandomBase {
		b.WriteString("> **This adapter was trained on a random-initialised base model** (a demonstration of the machinery). " +
			"Its predictions carry little meaning; do not use it for anything but testing.\n\n")
	}
	b.WriteString("## Not a diagnostic tool\n\n" +
		"This model is a **screening and research aid only**. It does not diagnose any condition, it was not validated clinically, and it must never " +
		"be used to make decisions about a person's care, access to services, employment or insurance. A statement labelled \"Suicidal\" or any other class " +
		"is a pattern match on text, not an assessment of a person. If you or someone you know may be at risk, contact local emergency services or a crisis line.\n\n")
	b.WriteString("## Intended use\n\n" +
		"- Research on language about mental health, e.g. studying how people describe their experiences online.\n" +
		"- Triage *assistance* in moderated settings where every output is reviewed by a trained person.\n\n" +
		"## Out-of-scope use\n\n" +
		"- Diagnosis, treatment decisions, risk scoring of individuals, or any automated action on a person.\n" +
		"- Text unlike the training data (other languages, clinical notes, very short or very long texts: inputs are truncated to the max length).\n\n")
	b.WriteString("## Bias, risks and limitations\n\n" +
		"- The training data (Kaggle \"Sentiment Analysis for Mental Health\", `Combined Data.csv`) was assembled from social-media posts labelled by their source community, not by clinicians; labels are noisy and overlap (Depression vs Suicidal especially).\n" +
		"- Classes are imbalanced (Personality disorder, Stress and Bipolar are small): their F1 is lower and less certain.\n" +
		"- The posts come mostly from English-speaking online communities; dialects, cultures and age groups outside them are under-represented.\n" +
		"- Confidence scores are calibrated on the validation split of the same distribution; on other text they are over-confident.\n\n")
	b.WriteString("## Training\n\n")
	fmt.Fprintf(&b, "- Data: %s, %s.\n", c.Dataset, c.SplitDesc)
	fmt.Fprintf(&b, "- Checkpoint: run `%s`, step %d.\n", c.Run, c.Step)
	writeKV(&b, "LoRA", c.LoRA)
	writeKV(&b, "Hyperparameters", c.Hyper)
	b.WriteString("\n## Evaluation (test split)\n\n")
	keys := make([]string, 0, len(c.Metrics))
	for k := range c.Metrics {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.WriteString("| metric | value |\n| --- | --- |\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "| %s | %.4f |\n", k, c.Metrics[k])
	}
	b.WriteString("\n" + c.EvalTables + "\n")
	b.WriteString("## How to load\n\n")
	if c.RandomBase {
		b.WriteString("The base above is not a published model: PEFT can load this adapter only on a base rebuilt with the same " +
			"config and init seed (loraft does that). The snippet shows the shape of the call.\n\n")
	}
	b.WriteString("```python\n" +
		"from transformers import AutoModelForSequenceClassification\nfrom peft import PeftModel\n" +
		fmt.Sprintf("labels = %s\n", pyList(c.Labels)) +
		fmt.Sprintf("base = AutoModelForSequenceClassification.from_pretrained(%q, num_labels=%d,\n", c.BaseModel, len(c.Labels)) +
		"    id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})\n" +
		"model = PeftModel.from_pretrained(base, \"path/to/this/directory\")\n" +
		fmt.Sprintf("# calibrated probabilities: softmax(logits / %.4f)\n", c.Temperature) + "```\n\n" +
		"With loraft: `loraft predict --adapter path/to/this/directory --text \"…\"`.\n")
	return b.String()
}

func writeKV(b *strings.Builder, title string, kv map[string]string) {
	if len(kv) == 0 {
		return
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%s", k, kv[k])
	}
	fmt.Fprintf(b, "- %s: %s.\n", title, strings.Join(parts, ", "))
}

func pyList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = fmt.Sprintf("%q", x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// yamlScalar writes s plain when it is a Hub-id-like word, else
// double-quoted (Go's quoting is valid YAML for these strings).
func yamlScalar(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._/-", r)) {
			return strconv.Quote(s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}
