// stn-gtsrb export --web: the page's back end (see app.js), the model run in this browser by onnxruntime-web's
// wasm build. model.onnx distorts, normalises, classifies and draws the regions (web_export.py's WebGraph);
// this file decodes images into the model's input size and reads the graph's outputs into answers.
"use strict";

window.stnBackend = (() => {
  let loading = null;
  const TOP_K = 5;

  function load() {
    loading ??= (async () => {
      const model = await (await fetch("model.json")).json();
      ort.env.wasm.wasmPaths = new URL(window.STN_ORT_BASE, document.baseURI).href; // absolute, for import()
      const runner = await ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
      return { model, runner };
    })();
    return loading;
  }

  function canvas(size) {
    const node = document.createElement("canvas");
    node.width = node.height = size;
    return node;
  }

  // An image file -> its RGB values at size x size (0-255, channel planes), as the browser resizes it.
  async function pixels(blob, size) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(blob);
    } catch (failure) {
      throw new Error("cannot read the image: not in a format this browser reads");
    }
    const context = canvas(size).getContext("2d", { willReadFrequently: true });
    context.imageSmoothingQuality = "high";
    context.drawImage(bitmap, 0, 0, size, size);
    const rgba = context.getImageData(0, 0, size, size).data;
    const planes = new Float32Array(3 * size * size);
    for (let i = 0; i < size * size; i++) {
      for (let c = 0; c < 3; c++) planes[c * size * size + i] = rgba[4 * i + c];
    }
    return planes;
  }

  // Image n of a (N, 3, size, size) output (0-255) as a PNG data URL.
  function pngUrl(values, n, size) {
    const node = canvas(size);
    const context = node.getContext("2d");
    const image = context.createImageData(size, size);
    const area = size * size;
    const start = n * 3 * area;
    for (let i = 0; i < area; i++) {
      for (let c = 0; c < 3; c++) image.data[4 * i + c] = Math.round(values[start + c * area + i]);
      image.data[4 * i + 3] = 255;
    }
    context.putImageData(image, 0, 0);
    return node.toDataURL("image/png");
  }

  // Points of image n of a (N, P, 2) output, as [[x, y], ...].
  function points(tensor, n) {
    const count = tensor.dims[1];
    const flat = tensor.data.subarray(n * count * 2, (n + 1) * count * 2);
    return Array.from({ length: count }, (_, i) => [flat[2 * i], flat[2 * i + 1]]);
  }

  // Image files and one distortion -> one answer per image, as POST /api/predict gives them.
  async function run(blobs, sliders) {
    const { model, runner } = await load();
    const size = model.image_size;
    const area = 3 * size * size;
    const images = new Float32Array(blobs.length * area);
    for (const [n, blob] of blobs.entries()) images.set(await pixels(blob, size), n * area);
    const distortion = new Float32Array(blobs.length * 4);
    for (let n = 0; n < blobs.length; n++) {
      distortion.set([sliders.rotation, sliders.scale, sliders.shift_x, sliders.shift_y], 4 * n);
    }
    const out = await runner.run({
      images: new ort.Tensor("float32", images, [blobs.length, 3, size, size]),
      distortion: new ort.Tensor("float32", distortion, [blobs.length, 4]),
    });
    const classes = model.classes.length;
    return blobs.map((_, n) => {
      const probabilities = Array.from(out.probabilities.data.subarray(n * classes, (n + 1) * classes));
      const top = probabilities.map((probability, id) => ({ class: id, name: model.classes[id], probability }))
        .sort((a, b) => b.probability - a.probability).slice(0, TOP_K);
      const transformers = model.positions.map((position, i) => ({
        position, colour: model.colours[i], corners: points(out[`corners${position}`], n),
        outline: points(out[`outline${position}`], n), view: pngUrl(out[`view${position}`].data, n, size),
      }));
      return { top, image_size: size, distortion: sliders, transformers, input: pngUrl(out.input.data, n, size) };
    });
  }

  return {
    async info() {
      const { model } = await load();
      return { ...model.info, sample_images: model.examples.length };
    },

    async predict(file, sliders, signal) {
      try {
        const [answer] = await run([file], sliders);
        if (signal && signal.aborted) throw new DOMException("superseded", "AbortError");
        return { ok: true, body: answer };
      } catch (failure) {
        if (failure.name === "AbortError") throw failure;
        return { ok: false, body: { error: failure.message } };
      }
    },

    async sample() {
      const { model } = await load();
      if (!model.examples.length) return { error: "this site has no example images" };
      const example = model.examples[Math.floor(Math.random() * model.examples.length)];
      const blob = await (await fetch(example.file)).blob();
      return { file: new File([blob], example.file.split("/").pop(), { type: "image/png" }),
        description: `test image ${example.index}, true class ${example.class}: ${example.name}` };
    },

    // The answers for images at these URLs (fetched, then the path of predict), for tests and timing.
    async classifyUrls(urls, sliders = { rotation: 0, scale: 1, shift_x: 0, shift_y: 0 }) {
      const blobs = await Promise.all(urls.map(async (url) => (await fetch(url)).blob()));
      return run(blobs, sliders);
    },
  };
})();
