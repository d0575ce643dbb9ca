// stn-gtsrb serve: the page's back end (see app.js), this server's JSON API.
"use strict";

window.stnBackend = {
  async info() {
    return (await fetch("api/model")).json();
  },

  async predict(file, sliders, signal) {
    const params = new URLSearchParams({ view: "1", top_k: "5", ...sliders });
    const form = new FormData();
    form.append("image", file, file.name || "image");
    try {
      const response = await fetch(`api/predict?${params}`, { method: "POST", body: form, signal });
      return { ok: response.ok, body: await response.json() };
    } catch (failure) {
      if (failure.name === "AbortError") throw failure;
      return { ok: false, body: { error: `the server did not answer (${failure.message})` } };
    }
  },

  async sample() {
    const response = await fetch("api/sample");
    const sample = await response.json();
    if (!response.ok) return { error: sample.error };
    const blob = await (await fetch(sample.image)).blob();
    return { file: new File([blob], `test-${sample.index}.png`, { type: "image/png" }),
      description: `test image ${sample.index}, true class ${sample.class}: ${sample.name}` };
  },
};
