// Allure 3 configuration for `make report` and the nightly matrix (reports/build_html.py). Offline: no analytics, no
// history service. The awesome plugin (Allure 3 UI) in 3.18.0 always emits a Google Analytics tag; build_html.py strips
// it and fails the build if any external script reference remains. ALLURE_NO_ANALYTICS=true covers the plugins that
// honour it.
// History: build_html.py --history FILE sets KSTACK_ALLURE_HISTORY; Allure reads that JSONL file for trends and appends
// this report's entry to it (historyLimit keeps the last nights).
const historyPath = process.env.KSTACK_ALLURE_HISTORY;
// Categories: Allure 3's awesome report reads them from this config only (categories.json in the results is kept
// for Allure 2 readers). build_html.py passes the suite's one rule list (reports/categories.py) as JSON, in the
// Allure-2-style keys Allure 3 accepts on a rule (name, matchedStatuses, messageRegex).
const categories = process.env.KSTACK_ALLURE_CATEGORIES ? JSON.parse(process.env.KSTACK_ALLURE_CATEGORIES) : null;

export default {
  name: "KServe stack conformance",
  output: "./allure-report",
  ...(historyPath ? { historyPath, historyLimit: 60 } : {}),
  ...(categories ? { categories: { rules: categories } } : {}),
  plugins: {
    awesome: {
      options: {
        reportName: "KServe stack conformance",
        singleFile: true,
        reportLanguage: "en",
        groupBy: ["epic", "feature", "story"],
      },
    },
  },
};
