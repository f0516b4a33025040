// WebGPU's `subgroups` feature (Chrome and Edge 134+, Safari 26) for the engine: wgpu 30's
// WebGPU backend cannot request it (its feature table lacks it: gfx-rs/wgpu#10146, fixed
// by the unmerged #10220), so every device request gets it here where the adapter offers
// it, and `roentgenSubgroups` says whether the device has it. src/gpu/mod.rs then picks
// the subgroup kernels for the adapter's subgroup size and declares `enable subgroups;`
// in them. Set `roentgenNoSubgroups = true` before a device is made to get the portable
// kernels (the benchmark compares both in one page). Drop this file (and `web_subgroups`
// in src/gpu/mod.rs) once wgpu maps the feature.
if (self.GPUAdapter) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (descriptor = {}) {
    let desc = descriptor;
    if (this.features.has('subgroups') && !self.roentgenNoSubgroups) {
      const wanted = new Set(descriptor.requiredFeatures || []);
      wanted.add('subgroups');
      desc = Object.assign({}, descriptor, { requiredFeatures: [...wanted] });
    }
    const device = await requestDevice.call(this, desc);
    self.roentgenSubgroups = device.features.has('subgroups') && !self.roentgenNoSubgroups;
    return device;
  };
}
