// renderocc interactive viewer: reads the frame data embedded in the page (see renderocc/vis/view.py) and
// draws prediction and ground truth as instanced voxel boxes with three.js. Built by `npm run build` into
// src/renderocc/vis/web/viewer.js, which `renderocc view` inlines into a self-contained HTML page.
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";

const FREE = 17;
const state = (window.renderocc = { ready: false, frame: -1, renderCount: 0, instances: {}, errors: [] });

function readData() {
  const node = document.getElementById("renderocc-data");
  return JSON.parse(node.textContent);
}

// base64 -> zlib (deflate) -> dense uint8 class grid [X * Y * Z], indexed x-major like numpy's C order.
async function decodeGrid(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function srgb(rgb) {
  return new THREE.Color().setRGB(rgb[0] / 255, rgb[1] / 255, rgb[2] / 255, THREE.SRGBColorSpace);
}

// The six face orientations of a voxel: outward normal, and the rotation taking a plane's +z normal to it.
const FACES = [
  [[1, 0, 0], new THREE.Euler(0, Math.PI / 2, 0)],
  [[-1, 0, 0], new THREE.Euler(0, -Math.PI / 2, 0)],
  [[0, 1, 0], new THREE.Euler(-Math.PI / 2, 0, 0)],
  [[0, -1, 0], new THREE.Euler(Math.PI / 2, 0, 0)],
  [[0, 0, 1], new THREE.Euler(0, 0, 0)],
  [[0, 0, -1], new THREE.Euler(Math.PI, 0, 0)],
];

class VoxelLayer {
  // The visible faces of one grid: one instanced quad per face that borders free space (or a hidden
  // class), one InstancedMesh per class. Faces between two shown voxels are never drawn: whole boxes
  // would leave their shared faces to flicker through sub-pixel seams as a moire over flat surfaces.
  constructor(scene, data) {
    this.group = new THREE.Group();
    scene.add(this.group);
    this.data = data;
    // Quads 0.5% larger than a face close the seams between neighbouring quads of one plane.
    this.geometry = new THREE.PlaneGeometry(data.grid.voxel_size * 1.005, data.grid.voxel_size * 1.005);
    this.meshes = [];
    this.dense = null;
  }

  // Load a frame's dense class grid; returns the number of voxels of each class.
  setGrid(dense, materials, visible) {
    this.dense = dense;
    this.rebuild(materials, visible);
    const voxels = new Array(FREE).fill(0);
    for (let i = 0; i < dense.length; i++) if (dense[i] < FREE) voxels[dense[i]]++;
    return voxels;
  }

  rebuild(materials, visible) {
    for (const mesh of this.meshes) {
      this.group.remove(mesh);
      mesh.dispose();
    }
    const dense = this.dense;
    const [X, Y, Z] = this.data.grid.shape;
    const [lx, ly, lz] = this.data.grid.lower;
    const vs = this.data.grid.voxel_size;
    const strides = [Y * Z, Z, 1];
    const dims = [X, Y, Z];
    const shown = (i) => dense[i] < FREE && visible[dense[i]];
    // Pass 1 counts the exposed faces of each class, pass 2 writes their matrices.
    const counts = new Uint32Array(FREE);
    const exposed = new Uint8Array(dense.length); // bit f set: face f borders free space
    const idx = [0, 0, 0];
    for (let x = 0, i = 0; x < X; x++) {
      for (let y = 0; y < Y; y++) {
        for (let z = 0; z < Z; z++, i++) {
          if (!shown(i)) continue;
          idx[0] = x;
          idx[1] = y;
          idx[2] = z;
          let bits = 0;
          for (let f = 0; f < 6; f++) {
            const axis = f >> 1;
            const step = f & 1 ? -1 : 1;
            const n = idx[axis] + step;
            if (n < 0 || n >= dims[axis] || !shown(i + step * strides[axis])) bits |= 1 << f;
          }
          exposed[i] = bits;
          for (let f = 0; f < 6; f++) if (bits & (1 << f)) counts[dense[i]]++;
        }
      }
    }
    const meshes = [];
    for (let c = 0; c < FREE; c++) {
      const mesh = new THREE.InstancedMesh(this.geometry, materials[c], Math.max(counts[c], 1));
      mesh.count = counts[c];
      mesh.visible = counts[c] > 0;
      mesh.userData.cls = c;
      meshes.push(mesh);
    }
    const rotations = FACES.map(([, euler]) => new THREE.Matrix4().makeRotationFromEuler(euler));
    const filled = new Uint32Array(FREE);
    const m = new THREE.Matrix4();
    for (let x = 0, i = 0; x < X; x++) {
      for (let y = 0; y < Y; y++) {
        for (let z = 0; z < Z; z++, i++) {
          const bits = exposed[i];
          if (!bits) continue;
          const c = dense[i];
          for (let f = 0; f < 6; f++) {
            if (!(bits & (1 << f))) continue;
            const normal = FACES[f][0];
            m.copy(rotations[f]).setPosition(
              lx + (x + 0.5 + normal[0] / 2) * vs,
              ly + (y + 0.5 + normal[1] / 2) * vs,
              lz + (z + 0.5 + normal[2] / 2) * vs,
            );
            meshes[c].setMatrixAt(filled[c]++, m);
          }
        }
      }
    }
    for (const mesh of meshes) {
      mesh.instanceMatrix.needsUpdate = true;
      mesh.computeBoundingSphere();
      this.group.add(mesh);
    }
    this.meshes = meshes;
  }

  faceCount() {
    return this.meshes.reduce((sum, mesh) => sum + mesh.count, 0);
  }

  setMaterials(materials) {
    for (const mesh of this.meshes) mesh.material = materials[mesh.userData.cls];
  }
}

function makeScene(data) {
  const scene = new THREE.Scene();
  scene.background = srgb(data.background);
  // Ambient + one directional light from the PNG renderer's light direction; three.js lights in linear
  // space (Lambert divides by pi), so these give top faces ~full colour and unlit faces ~0.4 after sRGB.
  scene.add(new THREE.AmbientLight(0xffffff, 0.5));
  const sun = new THREE.DirectionalLight(0xffffff, 3.0);
  sun.position.set(...data.light_dir);
  scene.add(sun);
  const [lo, hi] = data.ego_box;
  const ego = new THREE.Mesh(
    new THREE.BoxGeometry(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]),
    new THREE.MeshLambertMaterial({ color: srgb(data.ego_color) }),
  );
  ego.position.set((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2);
  scene.add(ego);
  const g = data.grid;
  const upper = g.shape.map((n, a) => g.lower[a] + n * g.voxel_size);
  const box = new THREE.Box3(new THREE.Vector3(...g.lower), new THREE.Vector3(...upper));
  scene.add(new THREE.Box3Helper(box, srgb([90, 96, 110])));
  return scene;
}

function buildClassList(data, onToggle) {
  const list = document.getElementById("classes");
  data.classes.forEach((cls, c) => {
    const row = document.createElement("label");
    row.className = "cls";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.id = `class-${c}`;
    box.addEventListener("change", () => onToggle(c, box.checked));
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${cls.color.join(",")})`;
    const name = document.createElement("span");
    name.textContent = cls.name;
    const count = document.createElement("span");
    count.className = "count";
    count.id = `count-${c}`;
    row.append(box, swatch, name, count);
    list.append(row);
  });
}

function showCameras(frame) {
  const holder = document.getElementById("cameras");
  holder.replaceChildren();
  for (const channel of ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]) {
    const cell = document.createElement("figure");
    if (frame.images && frame.images[channel]) {
      const img = document.createElement("img");
      img.src = frame.images[channel];
      img.alt = channel;
      img.title = "click to enlarge";
      img.addEventListener("click", () => {
        const overlay = document.getElementById("overlay");
        overlay.replaceChildren(img.cloneNode());
        overlay.hidden = false;
      });
      cell.append(img);
    } else {
      cell.classList.add("empty");
    }
    const cap = document.createElement("figcaption");
    cap.textContent = channel.replace("CAM_", "").replace("_", " ").toLowerCase();
    cell.append(cap);
    holder.append(cell);
  }
}

async function main() {
  const data = readData();
  document.title = data.title;
  const overlay = document.getElementById("overlay");
  overlay.addEventListener("click", () => (overlay.hidden = true));
  document.getElementById("title").textContent = data.title;
  const canvas = document.getElementById("canvas");
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio);
  renderer.setScissorTest(true);

  const lit = data.classes.map((c) => new THREE.MeshLambertMaterial({ color: srgb(c.color) }));
  const flat = data.classes.map((c) => new THREE.MeshBasicMaterial({ color: srgb(c.color) }));
  let materials = lit;
  const visible = data.classes.map(() => true);
  const layers = {};
  for (const name of data.sources) layers[name] = new VoxelLayer(makeScene(data), data);
  // The scenes were created with the layers' groups; keep a handle on each scene through its group.
  const sceneOf = (name) => layers[name].group.parent;

  const camera = new THREE.PerspectiveCamera(data.camera.fov_y, 1, 0.5, 500);
  camera.up.set(0, 0, 1);
  camera.position.set(...data.camera.eye);
  const controls = new OrbitControls(camera, canvas);
  controls.target.set(...data.camera.target);
  controls.update();
  controls.saveState();
  document.getElementById("reset").addEventListener("click", () => controls.reset());

  const modeSelect = document.getElementById("mode");
  const labels = document.getElementById("labels");
  let pending = false;
  function render() {
    pending = false;
    const shown = modeSelect.value === "both" ? data.sources : [modeSelect.value];
    const rect = canvas.getBoundingClientRect();
    const w = Math.max(1, Math.floor(rect.width));
    const h = Math.max(1, Math.floor(rect.height));
    if (canvas.width !== Math.floor(w * renderer.getPixelRatio()) || canvas.height !== Math.floor(h * renderer.getPixelRatio())) {
      renderer.setSize(w, h, false);
    }
    const vw = Math.floor(w / shown.length);
    camera.aspect = vw / h;
    // Narrow viewports widen the vertical field of view so that the horizontal one never drops below
    // the PNG panels' (data.camera.fov_y at 16:9): side by side views stay as wide as the pictures.
    const tanHalfX = Math.tan(THREE.MathUtils.degToRad(data.camera.fov_y / 2)) * (16 / 9);
    camera.fov = Math.max(data.camera.fov_y, THREE.MathUtils.radToDeg(2 * Math.atan(tanHalfX / camera.aspect)));
    camera.updateProjectionMatrix();
    labels.replaceChildren();
    shown.forEach((name, i) => {
      renderer.setViewport(i * vw, 0, vw, h);
      renderer.setScissor(i * vw, 0, vw, h);
      renderer.render(sceneOf(name), camera);
      const label = document.createElement("div");
      label.className = "view-label";
      label.style.left = `${i * vw + 10}px`;
      label.textContent = name;
      labels.append(label);
    });
    state.renderCount++;
  }
  function requestRender() {
    if (!pending) {
      pending = true;
      requestAnimationFrame(render);
    }
  }
  controls.addEventListener("change", requestRender);
  window.addEventListener("resize", requestRender);
  modeSelect.replaceChildren(
    ...[["both", "side by side"], ...data.sources.map((s) => [s, s])].slice(data.sources.length > 1 ? 0 : 1).map(([v, t]) => new Option(t, v)),
  );
  modeSelect.addEventListener("change", requestRender);

  buildClassList(data, (c, on) => {
    visible[c] = on;
    // Hiding a class exposes the faces of its neighbours (the road under a car): rebuild the faces.
    for (const [name, layer] of Object.entries(layers)) {
      layer.rebuild(materials, visible);
      state.instances[name] = layer.faceCount();
    }
    requestRender();
  });
  for (const [id, on] of [["all", true], ["none", false]]) {
    document.getElementById(id).addEventListener("click", () => {
      document.querySelectorAll("#classes input").forEach((box) => {
        if (box.checked !== on) {
          box.checked = on;
          box.dispatchEvent(new Event("change"));
        }
      });
    });
  }
  document.getElementById("flat").addEventListener("change", (e) => {
    materials = e.target.checked ? flat : lit;
    for (const layer of Object.values(layers)) layer.setMaterials(materials);
    requestRender();
  });

  const slider = document.getElementById("frame");
  slider.max = String(data.frames.length - 1);
  const info = document.getElementById("frame-info");
  let loading = Promise.resolve();
  async function showFrame(index) {
    const frame = data.frames[index];
    const counts = [];
    for (const name of data.sources) {
      const dense = await decodeGrid(frame.grids[name]);
      counts.push(layers[name].setGrid(dense, materials, visible));
      state.instances[name] = layers[name].faceCount();
    }
    // Voxels per class, "prediction / ground truth" when both are shown.
    for (let c = 0; c < FREE; c++) {
      const cell = document.getElementById(`count-${c}`);
      cell.textContent = counts.some((n) => n[c]) ? counts.map((n) => n[c]).join(" / ") : "";
      cell.title = `${data.classes[c].name} voxels: ${data.sources.join(" / ")}`;
    }
    info.textContent = `${index + 1} / ${data.frames.length}  ·  ${frame.label}`;
    showCameras(frame);
    state.frame = index;
    requestRender();
  }
  slider.addEventListener("input", () => {
    const index = Number(slider.value);
    loading = loading.then(() => showFrame(index));
  });
  window.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement && e.target.type !== "range") return;
    const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
    if (step && e.target !== slider) {
      slider.value = String(Math.min(data.frames.length - 1, Math.max(0, Number(slider.value) + step)));
      slider.dispatchEvent(new Event("input"));
    }
  });
  await showFrame(0);
  state.ready = true;
}

main().catch((err) => {
  state.errors.push(String(err));
  console.error(err);
  document.getElementById("title").textContent = `viewer error: ${err}`;
});
