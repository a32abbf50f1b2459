declare module 'hypercore'
