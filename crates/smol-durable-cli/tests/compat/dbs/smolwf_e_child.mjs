export const meta = { name: 'compat-kid', description: 'child of compat-killed-parent' };
const first = await agent('kid starts ' + args.item);
phase('Kid');
const second = await agent('kid finishes ' + args.item, { model: 'smart' });
export default { first, second };
